//! Files that survive a power cut by POSIX's rules, not by ext4's habits.
//!
//! POSIX makes a file's *data* durable with `fsync` of the file, and its
//! *name* durable only with `fsync` of the directory that holds it. A new
//! directory's name likewise needs its parent fsynced. Every file weir
//! creates or replaces goes through this module (a test in
//! `tests/durable_files.rs` fails when source code writes files another way):
//!
//! - [`create_dir_all`]: each directory it creates is made durable in its
//!   parent.
//! - [`open_or_create`]: opens a file, or creates it (with a mode) and
//!   makes the file and its name durable before returning.
//! - [`write_atomic`]: replaces a file's content: writes a temporary file
//!   beside it, fsyncs it, renames it over the target, fsyncs the
//!   directory. After a power cut the file holds the old content or the
//!   new, never a mix and never nothing.
//! - [`write_new`]: like `write_atomic`, but refuses to replace an
//!   existing file.
//!
//! The functions are generic over [`Fs`], the few file-system calls weir
//! makes; [`OsFs`] is the real one, and the tests run the same code on a
//! model that forgets, at a power cut, everything POSIX lets it forget.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("weir-fsutil-doc-{}", std::process::id()));
//! let file = dir.join("a/b/state.bin");
//! weir_agent::fsutil::write_atomic(&file, b"v1", 0o600).unwrap();
//! weir_agent::fsutil::write_atomic(&file, b"v2", 0o600).unwrap();
//! assert_eq!(std::fs::read(&file).unwrap(), b"v2");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file-system calls the durable helpers need.
pub trait Fs {
    /// An open file.
    type File;
    /// Whether `path` names something.
    fn exists(&self, path: &Path) -> bool;
    /// Creates one directory (its parent exists).
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Opens `path` for reading and writing, creating it with `mode` if it
    /// does not exist (`exclusive`: fail if it does).
    fn open(&self, path: &Path, mode: u32, exclusive: bool) -> io::Result<Self::File>;
    /// Appends `data` to the open file (written whole or an error).
    fn write(&self, file: &mut Self::File, data: &[u8]) -> io::Result<()>;
    /// `fsync` of an open file: its data and metadata are durable.
    fn sync(&self, file: &Self::File) -> io::Result<()>;
    /// `fsync` of a directory: the names in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Renames `from` over `to` (atomic by POSIX).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (best effort cleanup).
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

impl Fs for OsFs {
    type File = File;

    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(mode).create(path)
    }

    fn open(&self, path: &Path, mode: u32, exclusive: bool) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = OpenOptions::new();
        o.read(true).write(true).mode(mode);
        if exclusive {
            o.create_new(true);
        } else {
            o.create(true);
        }
        o.open(path)
    }

    fn write(&self, file: &mut File, data: &[u8]) -> io::Result<()> {
        file.write_all(data)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// [`create_dir_all`] on any [`Fs`].
///
/// # Errors
/// The first failing `mkdir` or `fsync`.
pub fn create_dir_all_in<F: Fs>(fs: &F, dir: &Path, mode: u32) -> io::Result<()> {
    if dir.as_os_str().is_empty() || fs.exists(dir) {
        return Ok(());
    }
    let parent = parent_of(dir);
    create_dir_all_in(fs, &parent, mode)?;
    match fs.mkdir(dir, mode) {
        Ok(()) => fs.sync_dir(&parent),
        // Made meanwhile by someone else: durable or not, not ours to say.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its missing ancestors (`mode` for each, e.g. 0o750),
/// making each new name durable by fsyncing its parent.
///
/// # Errors
/// The first failing `mkdir` or `fsync`.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    create_dir_all_in(&OsFs, dir, mode)
}

/// [`open_or_create`] on any [`Fs`]. Returns the file and whether it was
/// created.
///
/// # Errors
/// Opening, creating or fsyncing failed.
pub fn open_or_create_in<F: Fs>(fs: &F, path: &Path, mode: u32) -> io::Result<(F::File, bool)> {
    if fs.exists(path) {
        return Ok((fs.open(path, mode, false)?, false));
    }
    let dir = parent_of(path);
    create_dir_all_in(fs, &dir, 0o750)?;
    match fs.open(path, mode, true) {
        Ok(f) => {
            fs.sync(&f)?;
            fs.sync_dir(&dir)?;
            Ok((f, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok((fs.open(path, mode, false)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Opens `path` for reading and writing, or creates it with `mode` (and
/// its directories) and makes the new file and its name durable before
/// returning. Returns the file and whether it was created.
///
/// # Errors
/// Opening, creating or fsyncing failed.
pub fn open_or_create(path: &Path, mode: u32) -> io::Result<(File, bool)> {
    open_or_create_in(&OsFs, path, mode)
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

/// [`write_atomic`] on any [`Fs`]; `replace = false` fails with
/// `AlreadyExists` if `path` exists.
///
/// # Errors
/// Any failing step; the target is then as it was (a temporary file may be
/// left beside it, and is removed when possible).
pub fn write_file_in<F: Fs>(
    fs: &F,
    path: &Path,
    data: &[u8],
    mode: u32,
    replace: bool,
) -> io::Result<()> {
    if !replace && fs.exists(path) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists; not replacing it", path.display()),
        ));
    }
    let dir = parent_of(path);
    create_dir_all_in(fs, &dir, 0o750)?;
    let tmp = temp_name(path);
    if fs.exists(&tmp) {
        let _ = fs.remove(&tmp);
    }
    let r = (|| {
        let mut f = fs.open(&tmp, mode, true)?;
        fs.write(&mut f, data)?;
        fs.sync(&f)?;
        drop(f);
        fs.rename(&tmp, path)?;
        fs.sync_dir(&dir)
    })();
    if r.is_err() && fs.exists(&tmp) {
        let _ = fs.remove(&tmp);
    }
    r
}

/// Replaces (or creates) `path` with `data`, durably and atomically:
/// temporary file, `fsync`, rename, `fsync` of the directory. The file gets
/// `mode` (0o600 for secrets and stores).
///
/// # Errors
/// Any failing step; the old content then stands.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_file_in(&OsFs, path, data, mode, true)
}

/// Creates `path` with `data`, durably, refusing to replace an existing
/// file (keys, identities).
///
/// # Errors
/// `AlreadyExists`, or any failing step.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_file_in(&OsFs, path, data, mode, false)
}

/// Makes the name of `path` durable in its directory (after a rename or a
/// creation done by someone else, e.g. redb's compaction never renames,
/// but a moved-aside store does).
///
/// # Errors
/// The directory cannot be opened or fsynced.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    OsFs.sync_dir(&parent_of(path))
}

/// Renames `from` to `to` (same directory or file system) and makes both
/// names' change durable by fsyncing the directories involved.
///
/// # Errors
/// The rename or an `fsync` failed.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    OsFs.rename(from, to)?;
    let (a, b) = (parent_of(from), parent_of(to));
    OsFs.sync_dir(&b)?;
    if a != b {
        OsFs.sync_dir(&a)?;
    }
    Ok(())
}

#[cfg(test)]
pub mod model {
    //! A file system that keeps, at a power cut, only what POSIX promises.

    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Clone, Default, Debug)]
    struct Inode {
        live: Vec<u8>,
        durable: Option<Vec<u8>>,
    }

    /// Directory entries: (dir, name) → inode, live and durable.
    #[derive(Default, Debug)]
    pub struct Model {
        inodes: Vec<Inode>,
        live: BTreeMap<PathBuf, usize>,
        durable: BTreeMap<PathBuf, usize>,
    }

    /// The model behind the [`Fs`] calls.
    #[derive(Default, Debug)]
    pub struct ModelFs(pub RefCell<Model>);

    impl ModelFs {
        /// A file system with `/` (durable).
        pub fn new() -> ModelFs {
            let m = ModelFs::default();
            {
                let mut s = m.0.borrow_mut();
                s.inodes.push(Inode {
                    durable: Some(Vec::new()),
                    ..Inode::default()
                });
                s.live.insert(PathBuf::from("/"), 0);
                s.durable.insert(PathBuf::from("/"), 0);
            }
            m
        }

        /// The content of `path` after a power cut now, or `None` if the
        /// name (or one of its directories) is gone.
        pub fn after_power_cut(&self, path: &Path) -> Option<Vec<u8>> {
            let s = self.0.borrow();
            for a in path.ancestors().skip(1) {
                if !a.as_os_str().is_empty() && !s.durable.contains_key(a) {
                    return None;
                }
            }
            let ino = *s.durable.get(path)?;
            // Never-synced content is lost (a worst case POSIX allows).
            Some(s.inodes[ino].durable.clone().unwrap_or_default())
        }
    }

    /// An open file of the model.
    #[derive(Debug)]
    pub struct ModelFile(usize);

    impl Fs for ModelFs {
        type File = ModelFile;

        fn exists(&self, path: &Path) -> bool {
            self.0.borrow().live.contains_key(path)
        }

        fn mkdir(&self, path: &Path, _mode: u32) -> io::Result<()> {
            let mut s = self.0.borrow_mut();
            if s.live.contains_key(path) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            if !s.live.contains_key(&parent_of(path)) {
                return Err(io::ErrorKind::NotFound.into());
            }
            s.inodes.push(Inode {
                durable: Some(Vec::new()),
                ..Inode::default()
            });
            let ino = s.inodes.len() - 1;
            s.live.insert(path.to_path_buf(), ino);
            Ok(())
        }

        fn open(&self, path: &Path, _mode: u32, exclusive: bool) -> io::Result<ModelFile> {
            let mut s = self.0.borrow_mut();
            if let Some(&ino) = s.live.get(path) {
                if exclusive {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                return Ok(ModelFile(ino));
            }
            if !s.live.contains_key(&parent_of(path)) {
                return Err(io::ErrorKind::NotFound.into());
            }
            s.inodes.push(Inode::default());
            let ino = s.inodes.len() - 1;
            s.live.insert(path.to_path_buf(), ino);
            Ok(ModelFile(ino))
        }

        fn write(&self, file: &mut ModelFile, data: &[u8]) -> io::Result<()> {
            self.0.borrow_mut().inodes[file.0]
                .live
                .extend_from_slice(data);
            Ok(())
        }

        fn sync(&self, file: &ModelFile) -> io::Result<()> {
            let mut s = self.0.borrow_mut();
            let i = &mut s.inodes[file.0];
            i.durable = Some(i.live.clone());
            Ok(())
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            let mut s = self.0.borrow_mut();
            let children: Vec<(PathBuf, Option<usize>)> = {
                let live: Vec<_> = s
                    .live
                    .iter()
                    .filter(|(p, _)| p.parent() == Some(dir))
                    .map(|(p, i)| (p.clone(), Some(*i)))
                    .collect();
                let gone: Vec<_> = s
                    .durable
                    .keys()
                    .filter(|p| p.parent() == Some(dir) && !s.live.contains_key(*p))
                    .map(|p| (p.clone(), None))
                    .collect();
                live.into_iter().chain(gone).collect()
            };
            for (p, ino) in children {
                match ino {
                    Some(i) => s.durable.insert(p, i),
                    None => s.durable.remove(&p),
                };
            }
            Ok(())
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            let mut s = self.0.borrow_mut();
            let ino = s.live.remove(from).ok_or(io::ErrorKind::NotFound)?;
            s.live.insert(to.to_path_buf(), ino);
            Ok(())
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            let mut s = self.0.borrow_mut();
            s.live.remove(path).ok_or(io::ErrorKind::NotFound)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::ModelFs;
    use super::*;

    #[test]
    fn a_written_file_survives_a_power_cut_with_its_directories() {
        let fs = ModelFs::new();
        let p = Path::new("/var/lib/weir/identity.key");
        write_file_in(&fs, p, b"secret", 0o600, false).unwrap();
        assert_eq!(fs.after_power_cut(p).as_deref(), Some(&b"secret"[..]));
        write_file_in(&fs, p, b"new", 0o600, true).unwrap();
        assert_eq!(fs.after_power_cut(p).as_deref(), Some(&b"new"[..]));
        assert!(write_file_in(&fs, p, b"x", 0o600, false).is_err());
    }

    #[test]
    fn a_created_store_file_and_its_new_directories_are_durable() {
        let fs = ModelFs::new();
        let p = Path::new("/data/weir/weir.redb");
        let (_f, created) = open_or_create_in(&fs, p, 0o600).unwrap();
        assert!(created);
        assert_eq!(fs.after_power_cut(p).as_deref(), Some(&b""[..]));
    }

    /// The model is strict enough to catch the bug this module exists for:
    /// a file created and fsynced, but its directory not.
    #[test]
    fn the_model_loses_a_name_whose_directory_was_not_synced() {
        let fs = ModelFs::new();
        create_dir_all_in(&fs, Path::new("/data"), 0o750).unwrap();
        let p = Path::new("/data/weir.redb");
        let mut f = fs.open(p, 0o600, true).unwrap();
        fs.write(&mut f, b"journal").unwrap();
        fs.sync(&f).unwrap();
        assert_eq!(fs.after_power_cut(p), None);
        // And a directory made without fsyncing its parent loses all below.
        let fs = ModelFs::new();
        fs.mkdir(Path::new("/d"), 0o750).unwrap();
        let (_f, _) = open_or_create_in(&fs, Path::new("/d/x"), 0o600).unwrap();
        assert_eq!(fs.after_power_cut(Path::new("/d/x")), None);
    }

    #[test]
    fn a_replace_is_all_or_nothing_at_every_step() {
        // Cut the power after each call of the replacement: the file holds
        // the old content or the new one, never nothing.
        struct Counting<'a>(&'a ModelFs, std::cell::Cell<usize>, usize);
        impl Fs for Counting<'_> {
            type File = <ModelFs as Fs>::File;
            fn exists(&self, p: &Path) -> bool {
                self.0.exists(p)
            }
            fn mkdir(&self, p: &Path, m: u32) -> io::Result<()> {
                self.step()?;
                self.0.mkdir(p, m)
            }
            fn open(&self, p: &Path, m: u32, e: bool) -> io::Result<Self::File> {
                self.step()?;
                self.0.open(p, m, e)
            }
            fn write(&self, f: &mut Self::File, d: &[u8]) -> io::Result<()> {
                self.step()?;
                self.0.write(f, d)
            }
            fn sync(&self, f: &Self::File) -> io::Result<()> {
                self.step()?;
                self.0.sync(f)
            }
            fn sync_dir(&self, d: &Path) -> io::Result<()> {
                self.step()?;
                self.0.sync_dir(d)
            }
            fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
                self.step()?;
                self.0.rename(a, b)
            }
            fn remove(&self, p: &Path) -> io::Result<()> {
                self.0.remove(p)
            }
        }
        impl Counting<'_> {
            fn step(&self) -> io::Result<()> {
                let n = self.1.get();
                self.1.set(n + 1);
                if n == self.2 {
                    Err(io::Error::other("power cut"))
                } else {
                    Ok(())
                }
            }
        }
        let p = Path::new("/etc/weir/state");
        for cut in 0..16 {
            let fs = ModelFs::new();
            write_file_in(&fs, p, b"old", 0o600, true).unwrap();
            let c = Counting(&fs, std::cell::Cell::new(0), cut);
            let done = write_file_in(&c, p, b"new", 0o600, true).is_ok();
            let after = fs.after_power_cut(p);
            assert!(
                after.as_deref() == Some(b"old") || after.as_deref() == Some(b"new"),
                "cut at step {cut}: {after:?}"
            );
            if done {
                assert_eq!(after.as_deref(), Some(&b"new"[..]));
            }
        }
    }
}
