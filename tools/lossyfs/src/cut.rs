//! The power cut: rewrites the backing directory to the durable image the model describes, then
//! starts a fresh model in which everything is durable.
//!
//! Steps, each over the whole model, in this order:
//! 1. `attic_fill`: every file named in a dirty directory's snapshot gets an attic link (nothing
//!    is changed yet, so a failure here leaves the backing directory untouched);
//! 2. `handles_close`: open handles let go of their backing files and turn stale;
//! 3. `data_restore`: every file with unsynced data gets its pre-images back and its durable size;
//! 4. `dirty_dirs_clear`: the non-directory entries of every live dirty directory are removed;
//! 5. `dirs_stage`: every directory whose live position is not its durable one moves into the
//!    stage (a removed one that a cut brings back is made there, empty);
//! 6. `dirs_place`: staged directories reachable from the root through durable positions move to
//!    their durable positions, parents first;
//! 7. `entries_link`: the durable non-directory entries of every reachable dirty directory are
//!    hard-linked back from the attic;
//! 8. the stage (what a cut does not keep) and the attic are emptied, the model is reset.
//!
//! Must never run while an operation is half done: the caller holds the gate exclusively.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::model::{DirNode, HandleKind, Link, Model, Node, NodeId, ROOT, STAGE};
use crate::mount::Shared;
use crate::Error;

/// What one cut did, for the log.
#[derive(Debug, Default)]
struct CutCounts {
    files_restored: u64,
    entries_removed: u64,
    dirs_moved: u64,
    entries_linked: u64,
    conflicts: u64,
}

impl Shared {
    /// See [`crate::Control::cut`].
    pub(crate) fn cut(&self) -> Result<(), Error> {
        let _gate = self.gate_exclusive()?;
        let mut model = self.model_for_control()?;
        let started = Instant::now();
        attic_fill(&mut model)?;
        let mut counts = CutCounts::default();
        let rebuilt = rebuild(&mut model, &mut counts);
        // Whatever happened, the model starts over from what is on disk now.
        let reset = model
            .reset()
            .map_err(|e| Error::io("resetting after the cut", e));
        self.cuts.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = &rebuilt {
            tracing::error!(%error, "cut failed half way: the backing directory is in between");
        }
        rebuilt.and(reset)?;
        tracing::info!(
            files_restored = counts.files_restored,
            entries_removed = counts.entries_removed,
            dirs_moved = counts.dirs_moved,
            entries_linked = counts.entries_linked,
            conflicts = counts.conflicts,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "power cut done"
        );
        Ok(())
    }
}

/// Steps 2 to 8 (see the module header).
fn rebuild(model: &mut Model, counts: &mut CutCounts) -> Result<(), Error> {
    handles_close(model);
    data_restore(model, counts)?;
    dirty_dirs_clear(model, counts)?;
    dirs_stage(model, counts)?;
    dirs_place(model, counts)?;
    entries_link(model, counts)?;
    for dir in [&model.stage, &model.attic] {
        std::fs::remove_dir_all(dir)
            .map_err(|e| Error::io(format!("emptying {}", dir.display()), e))?;
        std::fs::create_dir(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    Ok(())
}

fn errno_error(context: &str, errno: fuser::Errno) -> Error {
    Error::io(context, std::io::Error::from_raw_os_error(errno.code()))
}

fn dirty_dirs(model: &Model) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = model
        .nodes
        .iter()
        .filter_map(|(&id, node)| match node {
            Node::Dir(DirNode {
                snapshot: Some(_), ..
            }) => Some(id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids
}

fn snapshot_files(model: &Model, dir: NodeId) -> Vec<(std::ffi::OsString, NodeId)> {
    match model.dir(dir) {
        Ok(DirNode {
            snapshot: Some(snapshot),
            ..
        }) => snapshot
            .iter()
            .map(|(name, &id)| (name.clone(), id))
            .collect(),
        _ => Vec::new(),
    }
}

fn attic_fill(model: &mut Model) -> Result<(), Error> {
    let mut files = BTreeSet::new();
    for dir in dirty_dirs(model) {
        files.extend(snapshot_files(model, dir).into_iter().map(|(_, id)| id));
    }
    for id in files {
        model
            .file_preserve(id)
            .map_err(|errno| errno_error("keeping a durable file in the attic", errno))?;
    }
    Ok(())
}

fn handles_close(model: &mut Model) {
    for handle in model.handles.values_mut() {
        if let HandleKind::File(file) = &mut handle.kind {
            *file = None;
        }
    }
}

fn data_restore(model: &mut Model, counts: &mut CutCounts) -> Result<(), Error> {
    for (&id, node) in &model.nodes {
        let Node::File(file) = node else { continue };
        let Some(unsynced) = &file.unsynced else {
            continue;
        };
        // A file no path reaches is in no durable entry either: nothing to restore.
        let Ok(path) = model.node_path(id) else {
            continue;
        };
        let context = || format!("restoring {}", path.display());
        let backing = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(context(), e))?;
        for (start, bytes) in unsynced.preimages() {
            backing
                .write_all_at(bytes, start)
                .map_err(|e| Error::io(context(), e))?;
        }
        backing
            .set_len(unsynced.durable_size)
            .map_err(|e| Error::io(context(), e))?;
        counts.files_restored += 1;
    }
    Ok(())
}

fn dirty_dirs_clear(model: &mut Model, counts: &mut CutCounts) -> Result<(), Error> {
    for dir in dirty_dirs(model) {
        let Ok(path) = model.dir_path(dir) else {
            continue;
        }; // Removed: nothing to clear.
        let entries = std::fs::read_dir(&path)
            .map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
            let file_type = entry.file_type().map_err(|e| Error::io("entry type", e))?;
            if !file_type.is_dir() {
                let entry_path = entry.path();
                std::fs::remove_file(&entry_path)
                    .map_err(|e| Error::io(format!("removing {}", entry_path.display()), e))?;
                counts.entries_removed += 1;
            }
        }
    }
    Ok(())
}

fn dirs_stage(model: &mut Model, counts: &mut CutCounts) -> Result<(), Error> {
    let mut misplaced: Vec<NodeId> = model
        .nodes
        .iter()
        .filter_map(|(&id, node)| match node {
            Node::Dir(dir) if id != ROOT && dir.live != dir.durable => Some(id),
            _ => None,
        })
        .collect();
    misplaced.sort_unstable();
    for id in misplaced {
        let staged = model.stage.join(id.to_string());
        let is_live = model.dir(id).is_ok_and(|dir| dir.live.is_some());
        if is_live {
            let path = model
                .dir_path(id)
                .map_err(|errno| errno_error("locating a directory", errno))?;
            std::fs::rename(&path, &staged)
                .map_err(|e| Error::io(format!("staging {}", path.display()), e))?;
        } else {
            std::fs::create_dir(&staged)
                .map_err(|e| Error::io(format!("recreating {}", staged.display()), e))?;
        }
        if let Ok(dir) = model.dir_mut(id) {
            dir.live = Some(Link::new(STAGE, staged.file_name().unwrap_or_default()));
        }
        counts.dirs_moved += 1;
    }
    Ok(())
}

/// Depth of a directory below the root through durable positions; `None` if the chain does
/// not reach the root (the directory would not exist after a cut).
fn durable_depth(model: &Model, id: NodeId) -> Option<usize> {
    let mut depth = 0;
    let mut current = id;
    while current != ROOT {
        current = model.dir(current).ok()?.durable.as_ref()?.parent;
        depth += 1;
        if depth > model.nodes.len() {
            return None; // A cycle of durable positions: unreachable.
        }
    }
    Some(depth)
}

fn dirs_place(model: &mut Model, counts: &mut CutCounts) -> Result<(), Error> {
    let mut staged: Vec<(usize, NodeId)> = model
        .nodes
        .iter()
        .filter_map(|(&id, node)| match node {
            Node::Dir(DirNode {
                live: Some(link), ..
            }) if link.parent == STAGE => durable_depth(model, id).map(|depth| (depth, id)),
            _ => None,
        })
        .collect();
    staged.sort_unstable();
    for (_, id) in staged {
        let Some(durable) = model.dir(id).ok().and_then(|dir| dir.durable.clone()) else {
            continue;
        };
        let parent = model
            .dir_path(durable.parent)
            .map_err(|errno| errno_error("locating a parent", errno))?;
        let target = parent.join(&durable.name);
        if std::fs::symlink_metadata(&target).is_ok() {
            tracing::warn!(target = %target.display(), "two directories durably at one name; keeping the first");
            counts.conflicts += 1;
            continue;
        }
        let staged_path = model
            .dir_path(id)
            .map_err(|errno| errno_error("locating a staged directory", errno))?;
        std::fs::rename(&staged_path, &target)
            .map_err(|e| Error::io(format!("placing {}", target.display()), e))?;
        if let Ok(dir) = model.dir_mut(id) {
            dir.live = Some(durable);
        }
    }
    Ok(())
}

fn entries_link(model: &mut Model, counts: &mut CutCounts) -> Result<(), Error> {
    for dir in dirty_dirs(model) {
        if durable_depth(model, dir).is_none() {
            continue;
        }
        let Ok(path) = model.dir_path(dir) else {
            continue;
        };
        for (name, file) in snapshot_files(model, dir) {
            let target = path.join(&name);
            match std::fs::hard_link(model.attic_path(file), &target) {
                Ok(()) => counts.entries_linked += 1,
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::warn!(target = %target.display(), "a directory durably holds this name; file dropped");
                    counts.conflicts += 1;
                }
                Err(error) => {
                    return Err(Error::io(format!("linking {}", target.display()), error))
                }
            }
        }
    }
    Ok(())
}
