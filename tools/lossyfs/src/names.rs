//! Operations on names: lookup, create, mknod, mkdir, symlink, link, unlink, rmdir, rename.
//!
//! Each one runs entirely under the model lock (they are short metadata calls), in this order:
//! fault check, durable snapshot of every directory it changes (`dir_make_dirty`), attic link
//! for a file about to lose its last live name, the backing call, then the bookkeeping. A
//! backing call that fails after the snapshots leaves the model right: a snapshot equal to the
//! live entries is the same as none.

use std::ffi::OsStr;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use fuser::{Errno, FileAttr};
use nix::libc;

use crate::model::{io_errno, EntryKind, HandleKind, Link, Model, Node, NodeId, Origin};
use crate::mount::Shared;
use crate::ops::{attr_of, open_locked, stat};

/// Permission bits of a mode (the kernel already applied the caller's umask; set them exactly,
/// without the daemon's umask).
fn permissions(mode: u32) -> Permissions {
    Permissions::from_mode(mode & 0o7777)
}

impl Shared {
    pub(crate) fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<FileAttr, Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        let (id, metadata) = model.child(parent, name)?;
        Ok(attr_of(&model, id, &metadata))
    }

    /// Creates and opens a regular file. Without `O_EXCL`, an existing file is opened instead.
    pub(crate) fn create(
        &self,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(parent, name)?;
        model.dir_make_dirty(parent)?;
        let path = model.child_path(parent, name)?;
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&path);
        match created {
            Ok(file) => {
                file.set_permissions(permissions(mode))
                    .map_err(|e| io_errno(&e))?;
                let metadata = file.metadata().map_err(|e| io_errno(&e))?;
                let id = model.insert_node(
                    parent,
                    name,
                    metadata.ino(),
                    EntryKind::Regular,
                    Origin::Created,
                );
                let fh = model.handle_insert(id, HandleKind::File(Some(Arc::new(file))));
                Ok((attr_of(&model, id, &metadata), fh))
            }
            Err(error)
                if error.kind() == std::io::ErrorKind::AlreadyExists
                    && flags & libc::O_EXCL == 0 =>
            {
                let (id, _) = model.child(parent, name)?;
                let fh = open_locked(&mut model, id, flags)?;
                let metadata = stat(&path)?;
                Ok((attr_of(&model, id, &metadata), fh))
            }
            Err(error) => Err(io_errno(&error)),
        }
    }

    /// mknod: regular files only (the kernel uses it when `create` is not offered).
    pub(crate) fn mknod(&self, parent: NodeId, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::ENOTSUP);
        }
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(parent, name)?;
        model.dir_make_dirty(parent)?;
        let path = model.child_path(parent, name)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&path);
        let file = file.map_err(|e| io_errno(&e))?;
        file.set_permissions(permissions(mode))
            .map_err(|e| io_errno(&e))?;
        let metadata = file.metadata().map_err(|e| io_errno(&e))?;
        let id = model.insert_node(
            parent,
            name,
            metadata.ino(),
            EntryKind::Regular,
            Origin::Created,
        );
        Ok(attr_of(&model, id, &metadata))
    }

    pub(crate) fn mkdir(&self, parent: NodeId, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(parent, name)?;
        model.dir_make_dirty(parent)?;
        let path = model.child_path(parent, name)?;
        DirBuilder::new()
            .mode(mode & 0o7777)
            .create(&path)
            .map_err(|e| io_errno(&e))?;
        std::fs::set_permissions(&path, permissions(mode)).map_err(|e| io_errno(&e))?;
        let metadata = stat(&path)?;
        let id = model.insert_node(
            parent,
            name,
            metadata.ino(),
            EntryKind::Dir,
            Origin::Created,
        );
        Ok(attr_of(&model, id, &metadata))
    }

    pub(crate) fn symlink(
        &self,
        parent: NodeId,
        name: &OsStr,
        target: &Path,
    ) -> Result<FileAttr, Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(parent, name)?;
        model.dir_make_dirty(parent)?;
        let path = model.child_path(parent, name)?;
        std::os::unix::fs::symlink(target, &path).map_err(|e| io_errno(&e))?;
        let metadata = stat(&path)?;
        let id = model.insert_node(
            parent,
            name,
            metadata.ino(),
            EntryKind::Other,
            Origin::Created,
        );
        Ok(attr_of(&model, id, &metadata))
    }

    /// A new hard link `new_parent/new_name` to node `id`.
    pub(crate) fn link(
        &self,
        id: NodeId,
        new_parent: NodeId,
        new_name: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(new_parent, new_name)?;
        if model.dir(id).is_ok() {
            return Err(Errno::EPERM);
        }
        model.dir_make_dirty(new_parent)?;
        let source = model.node_path(id)?;
        let target = model.child_path(new_parent, new_name)?;
        std::fs::hard_link(&source, &target).map_err(|e| io_errno(&e))?;
        model
            .file_mut(id)?
            .links
            .push(Link::new(new_parent, new_name));
        let metadata = stat(&target)?;
        Ok(attr_of(&model, id, &metadata))
    }

    pub(crate) fn unlink(&self, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(parent, name)?;
        let (id, metadata) = model.child(parent, name)?;
        if metadata.is_dir() {
            return Err(Errno::EISDIR);
        }
        model.dir_make_dirty(parent)?;
        model.file_unlinking(id, metadata.nlink())?;
        std::fs::remove_file(model.child_path(parent, name)?).map_err(|e| io_errno(&e))?;
        model.file_unlinked(id, &Link::new(parent, name));
        Ok(())
    }

    pub(crate) fn rmdir(&self, parent: NodeId, name: &OsStr) -> Result<(), Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(parent, name)?;
        let (id, metadata) = model.child(parent, name)?;
        if !metadata.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        model.dir_make_dirty(parent)?;
        // Its durable entries must outlive it: a cut may bring it back.
        model.dir_make_dirty(id)?;
        std::fs::remove_dir(model.child_path(parent, name)?).map_err(|e| io_errno(&e))?;
        model.dir_removed(id)
    }

    /// rename(2), with `RENAME_NOREPLACE`; `RENAME_EXCHANGE` and whiteouts are refused.
    pub(crate) fn rename(
        &self,
        parent: NodeId,
        name: &OsStr,
        new_parent: NodeId,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(Errno::EINVAL);
        }
        let _gate = self.gate()?;
        let mut model = self.model()?;
        model.fault_check_child(parent, name)?;
        model.fault_check_child(new_parent, new_name)?;
        let (id, metadata) = model.child(parent, name)?;
        let target = match model.child(new_parent, new_name) {
            Ok(found) => Some(found),
            Err(errno) if errno == Errno::ENOENT => None,
            Err(errno) => return Err(errno),
        };
        if let Some((target_id, target_metadata)) = &target {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            if *target_id == id {
                return Ok(()); // Two names of one inode: rename(2) does nothing.
            }
            match (metadata.is_dir(), target_metadata.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
        }
        model.dir_make_dirty(parent)?;
        model.dir_make_dirty(new_parent)?;
        if let Some((target_id, target_metadata)) = &target {
            if target_metadata.is_dir() {
                model.dir_make_dirty(*target_id)?;
            } else {
                model.file_unlinking(*target_id, target_metadata.nlink())?;
            }
        }
        let source_path = model.child_path(parent, name)?;
        let target_path = model.child_path(new_parent, new_name)?;
        std::fs::rename(&source_path, &target_path).map_err(|e| io_errno(&e))?;
        rename_bookkeeping(
            &mut model,
            id,
            Link::new(parent, name),
            Link::new(new_parent, new_name),
            target,
        )
    }
}

/// After a successful backing rename of node `id` from `from` to `to`, replacing `target`.
fn rename_bookkeeping(
    model: &mut Model,
    id: NodeId,
    from: Link,
    to: Link,
    target: Option<(NodeId, std::fs::Metadata)>,
) -> Result<(), Errno> {
    if let Some((target_id, target_metadata)) = target {
        if target_metadata.is_dir() {
            model.dir_removed(target_id)?;
        } else {
            model.file_unlinked(target_id, &to);
        }
    }
    match model.nodes.get_mut(&id) {
        Some(Node::Dir(dir)) => dir.live = Some(to),
        Some(Node::File(file)) => {
            file.links.retain(|link| *link != from);
            file.links.push(to);
        }
        None => return Err(Errno::ESTALE),
    }
    Ok(())
}
