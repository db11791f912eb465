//! Checkpoints: how far each tailed file has been read, persisted atomically under `state_dir`.
//!
//! The state file is `checkpoints.json`:
//!
//! ```json
//! {"version":1,"files":[{"source":"app","path":"/var/log/app/a.log","dev":64769,
//!   "inode":1311,"fingerprint":{"len":256,"hash":1234567890},"offset":40960}]}
//! ```
//!
//! `offset` is the byte after the last complete line that was handed downstream; `fingerprint`
//! is an FNV-1a hash of the file's first `len` bytes (`len` ≤ [`FP_BYTES`]). A checkpoint
//! matches a file when `(dev, inode)` are equal *and* the file's first `len` bytes still hash to
//! `hash`, so a reused inode with different content never resumes at a stale offset.
//!
//! Writes are atomic: `checkpoints.json.tmp` in the same directory, `fsync`, `rename`, then
//! `fsync` of the directory. A state file that does not parse is renamed to
//! `checkpoints.json.corrupt-<unix secs>` with a warning and the tailer starts empty, so a bad
//! file never causes a crash loop.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How many leading bytes of a file its fingerprint covers (fewer while the file is shorter).
pub const FP_BYTES: usize = 256;

/// Name of the state file inside `state_dir`.
pub const STATE_FILE: &str = "checkpoints.json";

const VERSION: u32 = 1;

/// A content fingerprint: the FNV-1a 64 hash of the first `len` bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes covered (≤ [`FP_BYTES`]; smaller for a file that was shorter when last hashed).
    pub len: u32,
    /// FNV-1a 64 of those bytes.
    pub hash: u64,
}

impl Fingerprint {
    /// Fingerprints the first `min(size, FP_BYTES)` bytes of `file`.
    pub fn of(file: &File, size: u64) -> io::Result<Fingerprint> {
        let len = size.min(FP_BYTES as u64) as usize;
        let mut buf = [0u8; FP_BYTES];
        let got = read_full_at(file, &mut buf[..len], 0)?;
        Ok(Fingerprint {
            len: got as u32,
            hash: fnv1a(&buf[..got]),
        })
    }

    /// True when the first `self.len` bytes of `file` (whose size is `size`) hash to `self.hash`.
    pub fn matches(&self, file: &File, size: u64) -> io::Result<bool> {
        if size < u64::from(self.len) {
            return Ok(false);
        }
        let mut buf = [0u8; FP_BYTES];
        let len = (self.len as usize).min(FP_BYTES);
        let got = read_full_at(file, &mut buf[..len], 0)?;
        Ok(got == len && fnv1a(&buf[..len]) == self.hash)
    }
}

/// Reads up to `buf.len()` bytes at `pos`, stopping early only at end of file.
pub fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// FNV-1a, 64 bit: tiny, stable across releases (unlike `std`'s `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Where one file was read up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source's name (two sources may tail the same file independently).
    pub source: String,
    /// The path the file was last seen at (lossy UTF-8); used to find a file that was
    /// rotated away while the daemon was down, and to tell "replaced" from "never seen".
    pub path: String,
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub inode: u64,
    /// Fingerprint of its first bytes.
    pub fingerprint: Fingerprint,
    /// Byte offset after the last complete line handed downstream.
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    files: Vec<Checkpoint>,
}

/// The checkpoint file under a state directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    path: PathBuf,
}

impl CheckpointStore {
    /// Opens (creating `dir` if needed) and loads the saved checkpoints. A corrupt or
    /// unknown-version file is renamed aside with a warning and yields no checkpoints.
    pub fn open(dir: &Path) -> io::Result<(CheckpointStore, Vec<Checkpoint>)> {
        fs::create_dir_all(dir)?;
        let store = CheckpointStore {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE),
        };
        let text = match fs::read(&store.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((store, Vec::new())),
            Err(e) => return Err(e),
        };
        let parsed = serde_json::from_slice::<StateFile>(&text)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.version == VERSION {
                    Ok(s.files)
                } else {
                    Err(format!("unknown version {}", s.version))
                }
            });
        match parsed {
            Ok(files) => Ok((store, files)),
            Err(why) => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = dir.join(format!("{STATE_FILE}.corrupt-{secs}"));
                fs::rename(&store.path, &aside)?;
                tracing::warn!(
                    file = %store.path.display(),
                    moved_to = %aside.display(),
                    error = %why,
                    "checkpoint file is unreadable; set it aside and starting without checkpoints"
                );
                Ok((store, Vec::new()))
            }
        }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `files` atomically: tmp file, fsync, rename, fsync of the directory.
    pub fn save(&self, files: &[Checkpoint]) -> io::Result<()> {
        let state = StateFile {
            version: VERSION,
            files: files.to_vec(),
        };
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer(&mut f, &state)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(offset: u64) -> Checkpoint {
        Checkpoint {
            source: "s".into(),
            path: "/x/a.log".into(),
            dev: 1,
            inode: 2,
            fingerprint: Fingerprint { len: 3, hash: 4 },
            offset,
        }
    }

    #[test]
    fn save_then_open_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let (store, none) = CheckpointStore::open(&dir).unwrap();
        assert!(none.is_empty());
        store.save(&[cp(10), cp(20)]).unwrap();
        store.save(&[cp(30)]).unwrap();
        let (_, got) = CheckpointStore::open(&dir).unwrap();
        assert_eq!(got, vec![cp(30)]);
        assert!(!dir.join(format!("{STATE_FILE}.tmp")).exists());
    }

    #[test]
    fn corrupt_file_is_set_aside() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(STATE_FILE), b"{\"version\":1,\"files\":[{").unwrap();
        let (store, got) = CheckpointStore::open(d.path()).unwrap();
        assert!(got.is_empty());
        assert!(!store.path().exists());
        let aside: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("checkpoints.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        // And the next open is clean, not a loop.
        store.save(&[cp(1)]).unwrap();
        assert_eq!(CheckpointStore::open(d.path()).unwrap().1, vec![cp(1)]);
    }

    #[test]
    fn unknown_version_is_set_aside() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(STATE_FILE), b"{\"version\":9,\"files\":[]}").unwrap();
        assert!(CheckpointStore::open(d.path()).unwrap().1.is_empty());
    }

    #[test]
    fn fingerprint_grows_and_matches_prefix() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"hello\n").unwrap();
        let f = File::open(&p).unwrap();
        let short = Fingerprint::of(&f, 6).unwrap();
        assert_eq!(short.len, 6);
        fs::write(&p, b"hello\nworld\n").unwrap();
        assert!(short.matches(&f, 12).unwrap());
        fs::write(&p, b"HELLO\nworld\n").unwrap();
        assert!(!short.matches(&f, 12).unwrap());
        fs::write(&p, b"hel").unwrap();
        assert!(!short.matches(&f, 3).unwrap());
        let big = vec![b'x'; 1000];
        fs::write(&p, &big).unwrap();
        assert_eq!(Fingerprint::of(&f, 1000).unwrap().len as usize, FP_BYTES);
    }
}
