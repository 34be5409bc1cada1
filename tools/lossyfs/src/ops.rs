//! File operations that do not change names: attributes, open/read/write/release, fsync,
//! directory listing, statfs, fallocate.
//!
//! Each one holds the gate shared for its whole length and the model lock only for bookkeeping;
//! data is read and written outside the model lock. Every change records its pre-image before it
//! reaches the backing file, never after.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};
use nix::fcntl::FallocateFlags;
use nix::libc;
use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;

use crate::model::{io_errno, EntryKind, HandleKind, Model, NodeId, ROOT};
use crate::mount::Shared;

/// Entries handed to the kernel per readdir call at most.
const READDIR_ENTRIES_MAX: usize = 1024;
/// Largest read served in one call (the kernel asks for at most max_pages pages).
const READ_BYTES_MAX: u32 = 16 << 20;

/// Filesystem statistics of the backing directory, in the order `ReplyStatfs::statfs` takes them.
pub(crate) struct StatFs {
    pub(crate) blocks: u64,
    pub(crate) blocks_free: u64,
    pub(crate) blocks_available: u64,
    pub(crate) files: u64,
    pub(crate) files_free: u64,
    pub(crate) block_size: u32,
    pub(crate) name_length_max: u32,
    pub(crate) fragment_size: u32,
}

fn time_of(seconds: i64, nanoseconds: i64) -> SystemTime {
    let nanoseconds = u32::try_from(nanoseconds).unwrap_or(0);
    match u64::try_from(seconds) {
        Ok(seconds) => UNIX_EPOCH + Duration::new(seconds, nanoseconds),
        Err(_) => UNIX_EPOCH,
    }
}

/// The kernel's view of a backing inode, under lossyfs's node id. The attic link is not a name
/// the application made, so it is not counted.
pub(crate) fn attr_of(model: &Model, id: NodeId, metadata: &Metadata) -> FileAttr {
    let in_attic = model.file(id).is_ok_and(|file| file.in_attic);
    let nlink = metadata.nlink().saturating_sub(u64::from(in_attic));
    FileAttr {
        ino: INodeNo(id),
        size: metadata.size(),
        blocks: metadata.blocks(),
        atime: time_of(metadata.atime(), metadata.atime_nsec()),
        mtime: time_of(metadata.mtime(), metadata.mtime_nsec()),
        ctime: time_of(metadata.ctime(), metadata.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(metadata.file_type()).unwrap_or(FileType::RegularFile),
        perm: u16::try_from(metadata.mode() & 0o7777).unwrap_or(0),
        nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
        uid: metadata.uid(),
        gid: metadata.gid(),
        rdev: u32::try_from(metadata.rdev()).unwrap_or(0),
        blksize: u32::try_from(metadata.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

pub(crate) fn stat(path: &Path) -> Result<Metadata, Errno> {
    std::fs::symlink_metadata(path).map_err(|e| io_errno(&e))
}

/// Opens a backing file read-write whatever the caller asked: pre-images are read through the
/// same handle, and the kernel already checked the caller's access mode. Falls back to the
/// caller's mode where read-write is refused (read-only file system, busy executable).
pub(crate) fn backing_open(path: &Path, flags: i32) -> Result<File, Errno> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => Ok(file),
        Err(error) => {
            let fallback = [libc::EACCES, libc::EPERM, libc::EROFS, libc::ETXTBSY];
            if !error
                .raw_os_error()
                .is_some_and(|code| fallback.contains(&code))
            {
                return Err(io_errno(&error));
            }
            let mode = flags & libc::O_ACCMODE;
            OpenOptions::new()
                .read(mode != libc::O_WRONLY)
                .write(mode != libc::O_RDONLY)
                .open(path)
                .map_err(|e| io_errno(&e))
        }
    }
}

fn timespec_of(time: Option<TimeOrNow>) -> TimeSpec {
    match time {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(time)) => {
            TimeSpec::from_duration(time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
        }
    }
}

/// The attribute changes of one setattr call.
pub(crate) struct AttrChange {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<TimeOrNow>,
    pub(crate) mtime: Option<TimeOrNow>,
}

impl Shared {
    pub(crate) fn getattr(&self, id: NodeId, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let _gate = self.gate()?;
        let model = self.model()?;
        let by_handle = fh.and_then(|fh| model.handle_file(fh, id).ok());
        let metadata = match by_handle {
            Some(file) => file.metadata().map_err(|e| io_errno(&e))?,
            None => stat(&model.node_path(id)?)?,
        };
        Ok(attr_of(&model, id, &metadata))
    }

    pub(crate) fn setattr(
        &self,
        id: NodeId,
        fh: Option<u64>,
        change: &AttrChange,
    ) -> Result<FileAttr, Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        let path = model.node_path(id)?;
        if let Some(size) = change.size {
            model.fault_check_node(id)?;
            let file = match fh.and_then(|fh| model.handle_file(fh, id).ok()) {
                Some(file) => file,
                None => Arc::new(backing_open(&path, libc::O_WRONLY)?),
            };
            model.data_before_change(id, &file, size, u64::MAX)?;
            file.set_len(size).map_err(|e| io_errno(&e))?;
        }
        let is_symlink = stat(&path)?.file_type().is_symlink();
        if let (Some(mode), false) = (change.mode, is_symlink) {
            let permissions = std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777);
            std::fs::set_permissions(&path, permissions).map_err(|e| io_errno(&e))?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            std::os::unix::fs::lchown(&path, change.uid, change.gid).map_err(|e| io_errno(&e))?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &path,
                &timespec_of(change.atime),
                &timespec_of(change.mtime),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| Errno::from_i32(e as i32))?;
        }
        Ok(attr_of(&model, id, &stat(&path)?))
    }

    pub(crate) fn readlink(&self, id: NodeId) -> Result<OsString, Errno> {
        let _gate = self.gate()?;
        let path = self.model()?.node_path(id)?;
        std::fs::read_link(path)
            .map(|target| target.into_os_string())
            .map_err(|e| io_errno(&e))
    }

    /// Opens node `id` (not a directory) and returns the handle number.
    pub(crate) fn open(&self, id: NodeId, flags: i32) -> Result<u64, Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        open_locked(&mut model, id, flags)
    }

    pub(crate) fn read(
        &self,
        id: NodeId,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let _gate = self.gate()?;
        let file = self.model()?.handle_file(fh, id)?;
        let size = usize::try_from(size.min(READ_BYTES_MAX)).map_err(|_| Errno::EINVAL)?;
        let mut buffer = vec![0; size];
        let mut filled = 0;
        while filled < size {
            let at = offset + filled as u64;
            match file.read_at(&mut buffer[filled..], at) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(io_errno(&error)),
            }
        }
        buffer.truncate(filled);
        Ok(buffer)
    }

    /// Writes `data` at `offset`: pre-image first (under the model lock), then the write.
    pub(crate) fn write(
        &self,
        id: NodeId,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: i32,
    ) -> Result<u32, Errno> {
        let _gate = self.gate()?;
        let length = data.len() as u64;
        let file = {
            let mut model = self.model()?;
            let file = model.handle_file(fh, id)?;
            model.fault_check_node(id)?;
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            model.data_before_change(id, &file, offset, end)?;
            model.data_written(id, length);
            file
        };
        file.write_all_at(data, offset).map_err(|e| io_errno(&e))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            self.file_sync(id, &file, true)?;
        }
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    pub(crate) fn fsync(&self, id: NodeId, fh: u64, datasync: bool) -> Result<(), Errno> {
        let _gate = self.gate()?;
        let file = {
            let model = self.model()?;
            let file = model.handle_file(fh, id)?;
            model.fault_check_node(id)?;
            file
        };
        self.file_sync(id, &file, datasync)
    }

    /// The real sync first (when passing it through), then the model: a failed sync makes
    /// nothing durable.
    fn file_sync(&self, id: NodeId, file: &File, datasync: bool) -> Result<(), Errno> {
        if self.sync_backing {
            let synced = if datasync {
                file.sync_data()
            } else {
                file.sync_all()
            };
            synced.map_err(|e| io_errno(&e))?;
        }
        self.model()?.data_synced(id)?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn release(&self, fh: u64) -> Result<(), Errno> {
        let _gate = self.gate()?;
        self.model()?.handle_release(fh);
        Ok(())
    }

    /// Lists directory `id` once, at open, so that offsets stay stable across readdir calls.
    pub(crate) fn opendir(&self, id: NodeId) -> Result<u64, Errno> {
        let _gate = self.gate()?;
        let mut model = self.model()?;
        let path = model.dir_path(id)?;
        let parent = model
            .dir(id)?
            .live
            .as_ref()
            .map_or(ROOT, |link| link.parent);
        let mut entries = vec![
            (id, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for entry in std::fs::read_dir(&path).map_err(|e| io_errno(&e))? {
            let entry = entry.map_err(|e| io_errno(&e))?;
            let file_type = entry.file_type().map_err(|e| io_errno(&e))?;
            let name = entry.file_name();
            let ino = std::os::unix::fs::DirEntryExt::ino(&entry);
            let node = model.discover(id, &name, ino, EntryKind::of(file_type));
            let kind = FileType::from_std(file_type).unwrap_or(FileType::RegularFile);
            entries.push((node, kind, name));
        }
        Ok(model.handle_insert(id, HandleKind::Dir(entries)))
    }

    /// Up to `READDIR_ENTRIES_MAX` entries from `offset` on, each with the offset of the next.
    pub(crate) fn readdir(
        &self,
        fh: u64,
        offset: u64,
    ) -> Result<Vec<(NodeId, u64, FileType, OsString)>, Errno> {
        let _gate = self.gate()?;
        let model = self.model()?;
        let handle = model.handles.get(&fh).ok_or(Errno::EBADF)?;
        if handle.epoch != model.epoch {
            return Err(Errno::EIO);
        }
        let HandleKind::Dir(entries) = &handle.kind else {
            return Err(Errno::ENOTDIR);
        };
        let skip = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let page = entries
            .iter()
            .enumerate()
            .skip(skip)
            .take(READDIR_ENTRIES_MAX);
        Ok(page
            .map(|(index, (node, kind, name))| (*node, index as u64 + 1, *kind, name.clone()))
            .collect())
    }

    /// fsyncdir: the real sync first (when passing it through), then the model.
    pub(crate) fn fsyncdir(&self, id: NodeId) -> Result<(), Errno> {
        let _gate = self.gate()?;
        let path = {
            let model = self.model()?;
            model.fault_check_node(id)?;
            model.dir_path(id)?
        };
        if self.sync_backing {
            let dir = File::open(&path).map_err(|e| io_errno(&e))?;
            dir.sync_all().map_err(|e| io_errno(&e))?;
        }
        self.model()?.dir_synced(id)?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn statfs(&self) -> Result<StatFs, Errno> {
        let _gate = self.gate()?;
        let backing = self.model()?.backing.clone();
        let stats = nix::sys::statvfs::statvfs(&backing).map_err(|e| Errno::from_i32(e as i32))?;
        Ok(StatFs {
            blocks: stats.blocks(),
            blocks_free: stats.blocks_free(),
            blocks_available: stats.blocks_available(),
            files: stats.files(),
            files_free: stats.files_free(),
            block_size: u32::try_from(stats.block_size()).unwrap_or(4096),
            name_length_max: u32::try_from(stats.name_max()).unwrap_or(255),
            fragment_size: u32::try_from(stats.fragment_size()).unwrap_or(4096),
        })
    }

    /// fallocate: the bytes a mode may change (punch, zero, collapse, insert) get pre-images;
    /// plain allocation only starts the record, so a size it adds is undone by a cut.
    pub(crate) fn fallocate(
        &self,
        id: NodeId,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let _gate = self.gate()?;
        let flags = FallocateFlags::from_bits(mode).ok_or(Errno::ENOTSUP)?;
        let offset_signed = i64::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let length_signed = i64::try_from(length).map_err(|_| Errno::EFBIG)?;
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        let file = {
            let mut model = self.model()?;
            let file = model.handle_file(fh, id)?;
            model.fault_check_node(id)?;
            let (start, end) = if flags.intersects(
                FallocateFlags::FALLOC_FL_COLLAPSE_RANGE | FallocateFlags::FALLOC_FL_INSERT_RANGE,
            ) {
                (offset, u64::MAX)
            } else if flags.intersects(
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_ZERO_RANGE,
            ) {
                (offset, end)
            } else {
                (end, end)
            };
            model.data_before_change(id, &file, start, end)?;
            file
        };
        nix::fcntl::fallocate(&*file, flags, offset_signed, length_signed)
            .map_err(|e| Errno::from_i32(e as i32))
    }
}

/// Opens node `id` with the model locked; `O_TRUNC` (should the kernel pass it) truncates with
/// its pre-image recorded.
pub(crate) fn open_locked(model: &mut Model, id: NodeId, flags: i32) -> Result<u64, Errno> {
    model.file(id)?;
    let path = model.node_path(id)?;
    let file = backing_open(&path, flags)?;
    if flags & libc::O_TRUNC != 0 {
        model.fault_check_node(id)?;
        model.data_before_change(id, &file, 0, u64::MAX)?;
        file.set_len(0).map_err(|e| io_errno(&e))?;
    }
    Ok(model.handle_insert(id, HandleKind::File(Some(Arc::new(file)))))
}
