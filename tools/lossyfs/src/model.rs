//! The durability model: every node lossyfs knows (FUSE inode number = `NodeId`), where it lives
//! in the backing directory now, and what of it is durable.
//!
//! Owns the node table, the open handles, the faults and the attic (hard links that keep alive
//! the inodes a cut may have to bring back). It never answers the kernel and never decides
//! policy on its own: `ops` and `names` call it under the one model lock, `cut` rebuilds the
//! backing directory from it.
//!
//! Invariants (checked by asserts where cheap):
//! - a file named in some dirty directory's snapshot (`durable_refs > 0`) or open stays reachable:
//!   by a live name or by its attic link;
//! - a directory's `snapshot` holds only non-directory entries; directories are placed by their
//!   own `durable` position;
//! - node ids are never reused, so the kernel can never confuse a node from before a cut with one
//!   after it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Errno, FileType};

use crate::unsynced::Unsynced;

pub(crate) type NodeId = u64;

/// FUSE's fixed inode number for the mount root.
pub(crate) const ROOT: NodeId = 1;
/// Pseudo-directory id for the cut's staging area (never handed to the kernel).
pub(crate) const STAGE: NodeId = u64::MAX;
/// Deepest directory chain followed when building a path; a deeper chain means a cycle (a bug).
const DEPTH_MAX: usize = 4096;
/// Memory held in pre-images of overwritten durable bytes, for all files together. Past it writes
/// that need a new pre-image fail with EIO (loudly logged) rather than exhausting memory.
pub const PREIMAGE_BYTES_MAX: u64 = 1 << 30;

/// What lossyfs needs to know of an entry's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    Regular,
    /// Symlink, fifo, socket, device: no data to track, only names.
    Other,
}

impl EntryKind {
    pub(crate) fn of(file_type: std::fs::FileType) -> EntryKind {
        if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::Regular
        } else {
            EntryKind::Other
        }
    }
}

/// Whether a node was made through the mount just now or found in the backing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Created,
    Found,
}

/// One name of a node: the directory that holds it and the name in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) parent: NodeId,
    pub(crate) name: OsString,
}

impl Link {
    pub(crate) fn new(parent: NodeId, name: &OsStr) -> Link {
        Link {
            parent,
            name: name.to_os_string(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct DirNode {
    /// Where the directory is in the backing tree now; `None` once removed (and for the root).
    pub(crate) live: Option<Link>,
    /// Where a cut puts it; `None` when it would not exist after a cut (and for the root).
    pub(crate) durable: Option<Link>,
    /// Durable non-directory entries, taken before the first change since the last fsyncdir.
    /// `None` (clean) means the live entries are the durable ones.
    pub(crate) snapshot: Option<BTreeMap<OsString, NodeId>>,
    pub(crate) backing_ino: Option<u64>,
}

/// Any non-directory: regular file, symlink, fifo, socket.
#[derive(Debug)]
pub(crate) struct FileNode {
    /// Live names known to lossyfs (lookups add the ones it had not seen).
    pub(crate) links: Vec<Link>,
    /// An extra hard link `attic/<id>` keeps the inode alive without a live name.
    pub(crate) in_attic: bool,
    /// Entries naming this node in dirty directories' snapshots.
    pub(crate) durable_refs: u32,
    /// Open file handles of the current epoch.
    pub(crate) open: u32,
    /// `None`: data and size are durable as they are now.
    pub(crate) unsynced: Option<Unsynced>,
    pub(crate) bytes_unsynced: u64,
    pub(crate) backing_ino: u64,
    pub(crate) regular: bool,
}

#[derive(Debug)]
pub(crate) enum Node {
    Dir(DirNode),
    File(FileNode),
}

#[derive(Debug)]
pub(crate) enum HandleKind {
    /// `None` once a cut closed it: every use answers EIO.
    File(Option<Arc<File>>),
    Dir(Vec<(NodeId, FileType, OsString)>),
}

#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) node: NodeId,
    pub(crate) epoch: u64,
    pub(crate) kind: HandleKind,
}

/// A fault injected by `fail-writes` / `fail-space`.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) prefix: PathBuf,
    pub(crate) errno: Errno,
}

#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) backing: PathBuf,
    pub(crate) attic: PathBuf,
    pub(crate) stage: PathBuf,
    pub(crate) nodes: HashMap<NodeId, Node>,
    /// Backing inode number → node, for live inodes (and inodes kept in the attic).
    pub(crate) by_ino: HashMap<u64, NodeId>,
    pub(crate) next_id: NodeId,
    pub(crate) handles: HashMap<u64, Handle>,
    pub(crate) next_fh: u64,
    /// Bumped by every cut; handles of an older epoch are stale.
    pub(crate) epoch: u64,
    pub(crate) faults: Vec<Fault>,
    pub(crate) bytes_unsynced: u64,
    pub(crate) preimage_bytes: u64,
}

pub(crate) fn io_errno(error: &std::io::Error) -> Errno {
    Errno::from_i32(error.raw_os_error().unwrap_or(nix::libc::EIO))
}

impl Model {
    /// A model where everything in `backing` is durable as it is.
    ///
    /// # Errors
    /// If the backing root cannot be stat'ed.
    pub(crate) fn new(backing: PathBuf, state: &Path, next_id: NodeId) -> std::io::Result<Model> {
        let root_ino = std::fs::symlink_metadata(&backing)?.ino();
        let mut model = Model {
            backing,
            attic: state.join("attic"),
            stage: state.join("stage"),
            nodes: HashMap::new(),
            by_ino: HashMap::new(),
            next_id: next_id.max(ROOT + 1),
            handles: HashMap::new(),
            next_fh: 1,
            epoch: 0,
            faults: Vec::new(),
            bytes_unsynced: 0,
            preimage_bytes: 0,
        };
        model.root_insert(root_ino);
        Ok(model)
    }

    fn root_insert(&mut self, root_ino: u64) {
        let root = DirNode {
            live: None,
            durable: None,
            snapshot: None,
            backing_ino: Some(root_ino),
        };
        self.nodes.insert(ROOT, Node::Dir(root));
        self.by_ino.insert(root_ino, ROOT);
    }

    /// After a cut: forgets every node (their ids are never handed out again), makes every
    /// handle stale, and starts over with everything on disk durable. Faults stay.
    ///
    /// # Errors
    /// If the backing root cannot be stat'ed.
    pub(crate) fn reset(&mut self) -> std::io::Result<()> {
        self.epoch += 1;
        self.nodes.clear();
        self.by_ino.clear();
        self.bytes_unsynced = 0;
        self.preimage_bytes = 0;
        for handle in self.handles.values_mut() {
            if let HandleKind::File(file) = &mut handle.kind {
                *file = None;
            }
        }
        let root_ino = std::fs::symlink_metadata(&self.backing)?.ino();
        self.root_insert(root_ino);
        Ok(())
    }

    pub(crate) fn dir(&self, id: NodeId) -> Result<&DirNode, Errno> {
        match self.nodes.get(&id) {
            Some(Node::Dir(dir)) => Ok(dir),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ESTALE),
        }
    }

    pub(crate) fn dir_mut(&mut self, id: NodeId) -> Result<&mut DirNode, Errno> {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(dir)) => Ok(dir),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ESTALE),
        }
    }

    pub(crate) fn file(&self, id: NodeId) -> Result<&FileNode, Errno> {
        match self.nodes.get(&id) {
            Some(Node::File(file)) => Ok(file),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ESTALE),
        }
    }

    pub(crate) fn file_mut(&mut self, id: NodeId) -> Result<&mut FileNode, Errno> {
        match self.nodes.get_mut(&id) {
            Some(Node::File(file)) => Ok(file),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ESTALE),
        }
    }

    fn fresh_id(&mut self) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The names from the root (or the stage) down to directory `id`, and which base they hang
    /// from.
    fn dir_chain(&self, id: NodeId) -> Result<(NodeId, Vec<&OsStr>), Errno> {
        let mut names = Vec::new();
        let mut current = id;
        while current != ROOT && current != STAGE {
            if names.len() > DEPTH_MAX {
                tracing::error!(node = id, "directory chain too deep: a cycle in the model");
                return Err(Errno::ELOOP);
            }
            let link = self.dir(current)?.live.as_ref().ok_or(Errno::ENOENT)?;
            names.push(link.name.as_os_str());
            current = link.parent;
        }
        names.reverse();
        Ok((current, names))
    }

    /// The backing path of a live directory.
    pub(crate) fn dir_path(&self, id: NodeId) -> Result<PathBuf, Errno> {
        let (base, names) = self.dir_chain(id)?;
        let mut path = if base == STAGE {
            self.stage.clone()
        } else {
            self.backing.clone()
        };
        path.extend(names);
        Ok(path)
    }

    pub(crate) fn attic_path(&self, id: NodeId) -> PathBuf {
        self.attic.join(id.to_string())
    }

    /// A backing path that reaches the node: a live name, else (files) its attic link.
    pub(crate) fn node_path(&self, id: NodeId) -> Result<PathBuf, Errno> {
        match self.nodes.get(&id) {
            Some(Node::Dir(_)) => self.dir_path(id),
            Some(Node::File(file)) => {
                for link in &file.links {
                    if let Ok(parent) = self.dir_path(link.parent) {
                        return Ok(parent.join(&link.name));
                    }
                }
                if file.in_attic {
                    Ok(self.attic_path(id))
                } else {
                    Err(Errno::ESTALE)
                }
            }
            None => Err(Errno::ESTALE),
        }
    }

    pub(crate) fn child_path(&self, parent: NodeId, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.dir_path(parent)?.join(name))
    }

    /// The node's path relative to the mount root, when it has a live one (for faults).
    fn relative_path(&self, id: NodeId) -> Option<PathBuf> {
        let relative_dir = |dir: NodeId| -> Option<PathBuf> {
            let (base, names) = self.dir_chain(dir).ok()?;
            (base == ROOT).then(|| names.iter().collect())
        };
        match self.nodes.get(&id)? {
            Node::Dir(_) => relative_dir(id),
            Node::File(file) => {
                let link = file.links.first()?;
                Some(relative_dir(link.parent)?.join(&link.name))
            }
        }
    }

    /// The injected error for a change at `relative` (relative to the mount root), if any.
    fn fault_at(&self, relative: Option<&Path>) -> Result<(), Errno> {
        for fault in &self.faults {
            let hit = match relative {
                Some(path) => path.starts_with(&fault.prefix),
                None => fault.prefix.as_os_str().is_empty(),
            };
            if hit {
                return Err(fault.errno);
            }
        }
        Ok(())
    }

    /// Fails with the injected error when a fault covers node `id`.
    pub(crate) fn fault_check_node(&self, id: NodeId) -> Result<(), Errno> {
        if self.faults.is_empty() {
            return Ok(());
        }
        self.fault_at(self.relative_path(id).as_deref())
    }

    /// Fails with the injected error when a fault covers `name` in directory `parent`.
    pub(crate) fn fault_check_child(&self, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        if self.faults.is_empty() {
            return Ok(());
        }
        let relative = self.relative_path(parent).map(|dir| dir.join(name));
        self.fault_at(relative.as_deref())
    }

    /// The node for a backing entry at `parent/name` (inode `ino`), created if unknown. A node
    /// first seen here is clean: nothing lossyfs saw changed it, so it is durable as it is.
    pub(crate) fn discover(
        &mut self,
        parent: NodeId,
        name: &OsStr,
        ino: u64,
        kind: EntryKind,
    ) -> NodeId {
        if let Some(&id) = self.by_ino.get(&ino) {
            match self.nodes.get_mut(&id) {
                Some(Node::File(file)) if kind != EntryKind::Dir => {
                    let link = Link::new(parent, name);
                    if !file.links.contains(&link) {
                        file.links.push(link);
                    }
                    return id;
                }
                Some(Node::Dir(_)) if kind == EntryKind::Dir => return id,
                // The inode number now belongs to something else: forget the old mapping.
                _ => {
                    self.by_ino.remove(&ino);
                }
            }
        }
        self.insert_node(parent, name, ino, kind, Origin::Found)
    }

    /// Registers a node at `parent/name`. A node `Origin::Created` through the mount just now is
    /// not durable yet: an empty file / empty directory that no durable directory entry names.
    pub(crate) fn insert_node(
        &mut self,
        parent: NodeId,
        name: &OsStr,
        ino: u64,
        kind: EntryKind,
        origin: Origin,
    ) -> NodeId {
        let id = self.fresh_id();
        let link = Link::new(parent, name);
        let created = origin == Origin::Created;
        let node = if kind == EntryKind::Dir {
            Node::Dir(DirNode {
                durable: if created { None } else { Some(link.clone()) },
                live: Some(link),
                snapshot: created.then(BTreeMap::new),
                backing_ino: Some(ino),
            })
        } else {
            let regular = kind == EntryKind::Regular;
            Node::File(FileNode {
                links: vec![link],
                in_attic: false,
                durable_refs: 0,
                open: 0,
                unsynced: (created && regular).then(|| Unsynced::new(0)),
                bytes_unsynced: 0,
                backing_ino: ino,
                regular,
            })
        };
        self.nodes.insert(id, node);
        self.by_ino.insert(ino, id);
        id
    }

    /// Stats `parent/name` in the backing directory and returns its node.
    pub(crate) fn child(
        &mut self,
        parent: NodeId,
        name: &OsStr,
    ) -> Result<(NodeId, Metadata), Errno> {
        let path = self.child_path(parent, name)?;
        let metadata = std::fs::symlink_metadata(&path).map_err(|e| io_errno(&e))?;
        let id = self.discover(
            parent,
            name,
            metadata.ino(),
            EntryKind::of(metadata.file_type()),
        );
        Ok((id, metadata))
    }

    /// Takes the durable snapshot of directory `dir` before its first change since its last
    /// fsyncdir. Must be called before every change of its entries.
    pub(crate) fn dir_make_dirty(&mut self, dir: NodeId) -> Result<(), Errno> {
        if self.dir(dir)?.snapshot.is_some() {
            return Ok(());
        }
        let path = self.dir_path(dir)?;
        let mut snapshot = BTreeMap::new();
        for entry in std::fs::read_dir(&path).map_err(|e| io_errno(&e))? {
            let entry = entry.map_err(|e| io_errno(&e))?;
            let name = entry.file_name();
            let kind = EntryKind::of(entry.file_type().map_err(|e| io_errno(&e))?);
            let id = self.discover(dir, &name, entry.ino(), kind);
            if kind != EntryKind::Dir {
                snapshot.insert(name, id);
            }
        }
        for id in snapshot.values() {
            self.file_mut(*id)?.durable_refs += 1;
        }
        self.dir_mut(dir)?.snapshot = Some(snapshot);
        Ok(())
    }

    /// fsyncdir: the live entries of `dir` become its durable entries, and every directory that
    /// was or is in it gets its live position as durable one (a directory rename is durable once
    /// either parent is fsynced).
    pub(crate) fn dir_synced(&mut self, dir: NodeId) -> Result<(), Errno> {
        let snapshot = self.dir_mut(dir)?.snapshot.take();
        let mut moved = Vec::new();
        for (&id, node) in &self.nodes {
            if let Node::Dir(sub) = node {
                let touches = |link: &Option<Link>| link.as_ref().is_some_and(|l| l.parent == dir);
                if touches(&sub.live) || touches(&sub.durable) {
                    moved.push(id);
                }
            }
        }
        for id in moved {
            let sub = self.dir_mut(id)?;
            sub.durable = sub.live.clone();
            if sub.live.is_none() {
                self.dir_forget(id);
            }
        }
        for id in snapshot.into_iter().flat_map(BTreeMap::into_values) {
            self.file_mut(id)?.durable_refs -= 1;
            self.file_gc(id);
        }
        Ok(())
    }

    /// Drops a removed directory that would not come back on a cut.
    pub(crate) fn dir_forget(&mut self, id: NodeId) {
        let Some(Node::Dir(dir)) = self.nodes.remove(&id) else {
            return;
        };
        assert!(dir.live.is_none(), "forgetting a live directory");
        assert!(dir.durable.is_none(), "forgetting a durable directory");
        for file in dir.snapshot.into_iter().flat_map(BTreeMap::into_values) {
            if let Ok(node) = self.file_mut(file) {
                node.durable_refs -= 1;
            }
            self.file_gc(file);
        }
    }

    /// The directory at `parent/name` was removed from the backing tree.
    pub(crate) fn dir_removed(&mut self, id: NodeId) -> Result<(), Errno> {
        let dir = self.dir_mut(id)?;
        dir.live = None;
        let ino = dir.backing_ino.take();
        let durable = dir.durable.is_some();
        if let Some(ino) = ino {
            if self.by_ino.get(&ino) == Some(&id) {
                self.by_ino.remove(&ino);
            }
        }
        if !durable {
            self.dir_forget(id);
        }
        Ok(())
    }

    /// Keeps file `id` alive through an attic hard link (before its last live name goes).
    pub(crate) fn file_preserve(&mut self, id: NodeId) -> Result<(), Errno> {
        if self.file(id)?.in_attic {
            return Ok(());
        }
        let source = self.node_path(id)?;
        std::fs::hard_link(&source, self.attic_path(id)).map_err(|e| io_errno(&e))?;
        self.file_mut(id)?.in_attic = true;
        Ok(())
    }

    /// Before the live name `link` of file `id` goes away: keeps the inode when a cut could
    /// need it (durably named somewhere) or a handle still uses it. `nlink` is the backing link
    /// count before the removal.
    pub(crate) fn file_unlinking(&mut self, id: NodeId, nlink: u64) -> Result<(), Errno> {
        let file = self.file(id)?;
        let live_after = nlink.saturating_sub(1 + u64::from(file.in_attic));
        if live_after == 0 && (file.durable_refs > 0 || file.open > 0) {
            self.file_preserve(id)?;
        }
        Ok(())
    }

    /// After the live name `link` of file `id` was removed from the backing tree.
    pub(crate) fn file_unlinked(&mut self, id: NodeId, link: &Link) {
        if let Ok(file) = self.file_mut(id) {
            file.links.retain(|known| known != link);
        }
        self.file_gc(id);
    }

    /// Forgets file `id` once nothing can reach it: no live name, no durable name, no handle.
    pub(crate) fn file_gc(&mut self, id: NodeId) {
        let Ok(file) = self.file(id) else { return };
        if !file.links.is_empty() || file.durable_refs > 0 || file.open > 0 {
            return;
        }
        let Some(Node::File(file)) = self.nodes.remove(&id) else {
            return;
        };
        if file.in_attic {
            if let Err(error) = std::fs::remove_file(self.attic_path(id)) {
                tracing::warn!(node = id, %error, "could not remove an attic link");
            }
        }
        if self.by_ino.get(&file.backing_ino) == Some(&id) {
            self.by_ino.remove(&file.backing_ino);
        }
        self.bytes_unsynced -= file.bytes_unsynced;
        self.preimage_bytes -= file.unsynced.as_ref().map_or(0, Unsynced::preimage_bytes);
    }

    /// Starts the undo record of a regular file at its current size, if it has none.
    fn unsynced_start(&mut self, id: NodeId, file: &File) -> Result<(), Errno> {
        if self.file(id)?.unsynced.is_some() {
            return Ok(());
        }
        let size = file.metadata().map_err(|e| io_errno(&e))?.len();
        self.file_mut(id)?.unsynced = Some(Unsynced::new(size));
        Ok(())
    }

    /// Saves the durable bytes of `[start, end)` of file `id` before they are changed, reading
    /// them through `file` (a handle on the same inode).
    pub(crate) fn data_before_change(
        &mut self,
        id: NodeId,
        file: &File,
        start: u64,
        end: u64,
    ) -> Result<(), Errno> {
        if !self.file(id)?.regular {
            return Ok(());
        }
        self.unsynced_start(id, file)?;
        let gaps = match &self.file(id)?.unsynced {
            Some(unsynced) => unsynced.gaps(start, end),
            None => Vec::new(),
        };
        for (gap_start, gap_end) in gaps {
            let length = gap_end - gap_start;
            if self.preimage_bytes + length > PREIMAGE_BYTES_MAX {
                tracing::error!(
                    node = id,
                    preimage_bytes = self.preimage_bytes,
                    preimage_bytes_max = PREIMAGE_BYTES_MAX,
                    "unsynced overwrites exceed the pre-image limit; failing the write"
                );
                return Err(Errno::EIO);
            }
            let mut bytes = vec![0; usize::try_from(length).map_err(|_| Errno::EFBIG)?];
            file.read_exact_at(&mut bytes, gap_start)
                .map_err(|e| io_errno(&e))?;
            if let Some(unsynced) = &mut self.file_mut(id)?.unsynced {
                unsynced.insert(gap_start, bytes);
            }
            self.preimage_bytes += length;
        }
        Ok(())
    }

    /// Counts `length` bytes written to file `id` since its last fsync.
    pub(crate) fn data_written(&mut self, id: NodeId, length: u64) {
        if let Ok(file) = self.file_mut(id) {
            file.bytes_unsynced += length;
            self.bytes_unsynced += length;
        }
    }

    /// fsync / fdatasync of file `id`: its data and size are durable as they are now.
    pub(crate) fn data_synced(&mut self, id: NodeId) -> Result<(), Errno> {
        let file = self.file_mut(id)?;
        let unsynced = file.unsynced.take();
        let bytes = std::mem::take(&mut file.bytes_unsynced);
        self.bytes_unsynced -= bytes;
        self.preimage_bytes -= unsynced.as_ref().map_or(0, Unsynced::preimage_bytes);
        Ok(())
    }

    /// Registers an open handle on `node`.
    pub(crate) fn handle_insert(&mut self, node: NodeId, kind: HandleKind) -> u64 {
        if let (HandleKind::File(_), Ok(file)) = (&kind, self.file_mut(node)) {
            file.open += 1;
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                node,
                epoch: self.epoch,
                kind,
            },
        );
        fh
    }

    /// The backing file behind handle `fh` of node `node`.
    pub(crate) fn handle_file(&self, fh: u64, node: NodeId) -> Result<Arc<File>, Errno> {
        let handle = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        if handle.epoch != self.epoch {
            return Err(Errno::EIO);
        }
        if handle.node != node {
            return Err(Errno::EBADF);
        }
        match &handle.kind {
            HandleKind::File(Some(file)) => Ok(Arc::clone(file)),
            HandleKind::File(None) => Err(Errno::EIO),
            HandleKind::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Closes handle `fh`; the node may become unreachable and be forgotten.
    pub(crate) fn handle_release(&mut self, fh: u64) {
        let Some(handle) = self.handles.remove(&fh) else {
            return;
        };
        if handle.epoch != self.epoch {
            return;
        }
        if let HandleKind::File(_) = handle.kind {
            if let Ok(file) = self.file_mut(handle.node) {
                file.open -= 1;
            }
            self.file_gc(handle.node);
        }
    }

    /// Number of files with unsynced data and of directories with unsynced entries.
    pub(crate) fn dirty_counts(&self) -> (u64, u64) {
        let mut files = 0;
        let mut dirs = 0;
        for node in self.nodes.values() {
            match node {
                Node::File(file) if file.unsynced.is_some() => files += 1,
                Node::Dir(dir) if dir.snapshot.is_some() => dirs += 1,
                _ => {}
            }
        }
        (files, dirs)
    }
}
