//! Random writes, truncates, fsyncs, creates, renames, unlinks and directory fsyncs, checked
//! against a reference model of what must be visible now and what must survive a cut.
//!
//! The seed is printed; replay a failure with `LOSSYFS_SEED=<seed> cargo test -p lossyfs --test
//! random_model`.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::Fixture;

const ROUNDS: usize = 4;
const OPERATIONS_PER_ROUND: usize = 200;
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn pick<'a>(&mut self, names: &[&'a str]) -> &'a str {
        names[self.below(names.len() as u64) as usize]
    }
}

/// What the mount must show now (`live`) and after a cut (`durable`), per file id.
#[derive(Default)]
struct Reference {
    live_names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    live_data: BTreeMap<u64, Vec<u8>>,
    durable_data: BTreeMap<u64, Vec<u8>>,
    next_id: u64,
}

impl Reference {
    /// After a cut: what was durable is all there is.
    fn cut(&mut self) {
        self.live_names = self.durable_names.clone();
        self.live_data
            .retain(|id, _| self.durable_names.values().any(|named| named == id));
        self.durable_data
            .retain(|id, _| self.durable_names.values().any(|named| named == id));
        for (id, data) in &self.durable_data {
            self.live_data.insert(*id, data.clone());
        }
    }
}

fn operate(fx: &Fixture, rng: &mut Rng, model: &mut Reference) {
    let name = rng.pick(&NAMES);
    let path = fx.path(&format!("r/{name}"));
    let live = model.live_names.get(name).copied();
    match (rng.below(9), live) {
        (0..=2, Some(id)) => {
            let data = model.live_data.get_mut(&id).expect("live file");
            let offset = rng.below(data.len() as u64 + 64) as usize;
            let bytes: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.next() as u8).collect();
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            file.write_all_at(&bytes, offset as u64).expect("write");
            if data.len() < offset + bytes.len() {
                data.resize(offset + bytes.len(), 0);
            }
            data[offset..offset + bytes.len()].copy_from_slice(&bytes);
        }
        (3, Some(id)) => {
            let data = model.live_data.get_mut(&id).expect("live file");
            let length = rng.below(data.len() as u64 + 100) as usize;
            OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open")
                .set_len(length as u64)
                .expect("truncate");
            data.resize(length, 0);
        }
        (4 | 5, Some(id)) => {
            OpenOptions::new()
                .read(true)
                .open(&path)
                .expect("open")
                .sync_data()
                .expect("fdatasync");
            let data = model.live_data[&id].clone();
            model.durable_data.insert(id, data);
        }
        (6, Some(_)) => {
            let target = rng.pick(&NAMES);
            std::fs::rename(&path, fx.path(&format!("r/{target}"))).expect("rename");
            if let Some(id) = model.live_names.remove(name) {
                model.live_names.insert(target.to_owned(), id);
            }
        }
        (7, Some(_)) => {
            std::fs::remove_file(&path).expect("unlink");
            model.live_names.remove(name);
        }
        (8, _) => {
            fx.fsync_dir("r");
            model.durable_names = model.live_names.clone();
        }
        (_, None) => {
            std::fs::File::create(&path).expect("create");
            let id = model.next_id;
            model.next_id += 1;
            model.live_names.insert(name.to_owned(), id);
            model.live_data.insert(id, Vec::new());
            model.durable_data.insert(id, Vec::new());
        }
        (_, Some(_)) => {}
    }
}

fn check(fx: &Fixture, model: &Reference, when: &str) {
    let names: Vec<String> = model.live_names.keys().cloned().collect();
    assert_eq!(fx.names("r"), names, "names {when}");
    for (name, id) in &model.live_names {
        let data = fx.read(&format!("r/{name}")).expect("file listed");
        assert!(
            data == model.live_data[id],
            "content of {name} {when}: {} bytes",
            data.len()
        );
    }
}

#[test]
fn random_operations_match_the_reference_model() {
    // Goal: across random sequences, the mount shows every change at once and a cut keeps
    // exactly the durable image. Method: run random operations on the mount and on a reference
    // model, check contents before and after each of several cuts.
    let Some(fx) = Fixture::start("random_operations_match_the_reference_model") else {
        return;
    };
    let seed = std::env::var("LOSSYFS_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    // Straight to the stderr handle (not captured), so the seed shows even when it passes.
    let line = format!("random_operations_match_the_reference_model: LOSSYFS_SEED={seed}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    tracing::info!(seed, "random operations");
    let mut rng = Rng(seed | 1);
    std::fs::create_dir(fx.path("r")).expect("mkdir");
    fx.fsync_dir("");
    let mut model = Reference::default();
    for round in 0..ROUNDS {
        for _ in 0..OPERATIONS_PER_ROUND {
            operate(&fx, &mut rng, &mut model);
        }
        check(&fx, &model, &format!("before cut {round} (seed {seed})"));
        fx.cut();
        model.cut();
        check(&fx, &model, &format!("after cut {round} (seed {seed})"));
    }
}
