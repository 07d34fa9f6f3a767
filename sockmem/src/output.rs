//! Files sockmem writes for the user (`-o`, `--ready-file`), written so that they cannot hurt:
//!
//! - a regular file is written to a new temporary file beside it (created exclusively, never
//!   through a link) and renamed over the target only when the run succeeded, so a failed run
//!   leaves the old file as it was and a reader never sees half a file;
//! - a path that is a symbolic link to a regular file is refused: in a shared directory such a
//!   link can be planted to make root truncate a file of someone else's choosing;
//! - a path that is not a regular file (a FIFO, a terminal, `/dev/null`, `/dev/stdout`) is
//!   written in place, as the user meant.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("`{0}` is a symbolic link to a regular file; give the file's own path")]
    Symlink(PathBuf),
    #[error("`{0}` is a directory")]
    Directory(PathBuf),
    #[error("`{output}` is the input file `{input}`: writing it would destroy what is being read")]
    SameAsInput { output: PathBuf, input: PathBuf },
    #[error("cannot create a file in `{dir}`")]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("moving the finished output into place as `{path}`")]
    Rename {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Output is written in chunks this large (`trace` at full rate makes tens of MB a second).
pub const BUFFER_BYTES: usize = 256 << 10;

/// A file being written: complete at the target path only after [`OutputFile::commit`].
pub struct OutputFile {
    path: PathBuf,
    /// The temporary file renamed over `path` at commit; `None` when writing in place.
    temp: Option<PathBuf>,
    out: BufWriter<File>,
}

impl OutputFile {
    /// Checks the target and opens what will be written: fails before any work is done when
    /// the path cannot be written.
    pub fn create(path: &Path) -> Result<OutputFile, OutputError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                // A link to something that is not a regular file (`/dev/stdout`, a FIFO) is
                // where the user wants the bytes; so is one of the process's own descriptors
                // (`/dev/stdout` redirected to a file: the user's own redirection, not a
                // planted link). Any other link to a regular file is refused.
                match fs::metadata(path) {
                    Ok(t) if !t.is_file() && !t.is_dir() => return in_place(path),
                    Ok(t) if t.is_file() && names_own_descriptor(path) => return in_place(path),
                    _ => return Err(OutputError::Symlink(path.to_path_buf())),
                }
            }
            Ok(m) if m.is_dir() => return Err(OutputError::Directory(path.to_path_buf())),
            Ok(m) if is_special(&m.file_type()) => return in_place(path),
            _ => {}
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_else(|| "output".to_owned());
        let mut last = None;
        for attempt in 0..16u32 {
            let temp = dir.join(format!(
                ".{name}.sockmem-{}-{attempt}.tmp",
                std::process::id()
            ));
            // Exclusive and without following links: nothing planted at this name is used.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&temp)
            {
                Ok(f) => {
                    return Ok(OutputFile {
                        path: path.to_path_buf(),
                        temp: Some(temp),
                        out: BufWriter::with_capacity(BUFFER_BYTES, f),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(OutputError::Create { dir, source: e }),
            }
        }
        Err(OutputError::Create {
            dir,
            source: last.unwrap_or_else(|| io::Error::other("no free temporary name")),
        })
    }

    /// Writes everything, then puts the file in place. Without a commit (an error, a panic)
    /// the temporary file is removed and the target stays as it was.
    pub fn commit(self) -> Result<(), OutputError> {
        self.put_in_place(true)
    }

    /// Like [`OutputFile::commit`], with `sync` deciding whether the data reaches the disk
    /// first (a ready file is a signal, not data worth a wait).
    fn put_in_place(mut self, sync: bool) -> Result<(), OutputError> {
        let write_err = |source| OutputError::Write {
            path: self.path.clone(),
            source,
        };
        self.out.flush().map_err(write_err)?;
        if let Some(temp) = self.temp.take() {
            let synced = if sync {
                self.out.get_ref().sync_all()
            } else {
                Ok(())
            };
            if let Err(source) = synced.and_then(|()| fs::rename(&temp, &self.path)) {
                let _ = fs::remove_file(&temp);
                return Err(OutputError::Rename {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf).map_err(|e| named(e, &self.path))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| named(e, &self.path))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            let _ = fs::remove_file(temp);
        }
    }
}

/// An I/O error that says which file it happened on (keeping its kind: a closed pipe stays
/// recognisable as one).
fn named(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("writing `{}`: {e}", path.display()))
}

fn is_special(t: &fs::FileType) -> bool {
    t.is_fifo() || t.is_char_device() || t.is_block_device() || t.is_socket()
}

/// `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`.
fn names_own_descriptor(path: &Path) -> bool {
    ["/dev/stdout", "/dev/stderr", "/dev/fd", "/proc/self/fd"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Refuses an output path that is the input file itself (`trace --input F -o F`, `plot F -o F`):
/// the output would replace the recording being read.
pub fn refuse_input(output: &Path, input: &Path) -> Result<(), OutputError> {
    use std::os::unix::fs::MetadataExt as _;
    if let (Ok(o), Ok(i)) = (fs::metadata(output), fs::metadata(input)) {
        if o.dev() == i.dev() && o.ino() == i.ino() {
            return Err(OutputError::SameAsInput {
                output: output.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn in_place(path: &Path) -> Result<OutputFile, OutputError> {
    // Appending: a descriptor redirected to a file (`>> log`, or `>` with a header already
    // written) keeps what is there; devices and pipes do not care.
    let f = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| OutputError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(OutputFile {
        path: path.to_path_buf(),
        temp: None,
        out: BufWriter::with_capacity(BUFFER_BYTES, f),
    })
}

/// A small file written whole but put in place later, at once (the ready file: prepared
/// before the programs start, in place right after, so that it says "running" without delay).
pub struct Prepared(OutputFile);

impl Prepared {
    pub fn new(path: &Path, contents: &[u8]) -> Result<Prepared, OutputError> {
        let mut f = OutputFile::create(path)?;
        f.write_all(contents).map_err(|source| OutputError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        f.flush().map_err(|source| OutputError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Prepared(f))
    }

    pub fn put_in_place(self) -> Result<(), OutputError> {
        self.0.put_in_place(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sockmem-output-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_target_changes_only_at_commit() {
        let d = scratch_dir("commit");
        let target = d.join("events.json");
        fs::write(&target, b"old").unwrap();
        let mut f = OutputFile::create(&target).unwrap();
        f.write_all(b"new").unwrap();
        f.flush().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"old", "untouched until commit");
        f.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary file left"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_run_leaves_the_old_file_and_no_temporary() {
        let d = scratch_dir("fail");
        let target = d.join("out.txt");
        fs::write(&target, b"keep me").unwrap();
        {
            let mut f = OutputFile::create(&target).unwrap();
            f.write_all(b"partial").unwrap();
            // Dropped without commit: the run failed.
        }
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_link_to_a_regular_file_is_refused_and_its_target_untouched() {
        let d = scratch_dir("link");
        let victim = d.join("victim");
        fs::write(&victim, b"secret").unwrap();
        let link = d.join("out");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = OutputFile::create(&link).err().expect("a link is refused");
        assert!(matches!(err, OutputError::Symlink(_)), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn devices_are_written_in_place_and_errors_name_the_file() {
        let mut null = OutputFile::create(Path::new("/dev/null")).unwrap();
        null.write_all(b"x").unwrap();
        null.commit().unwrap();
        assert!(Path::new("/dev/null").exists());
        if Path::new("/dev/full").exists() {
            let mut full = OutputFile::create(Path::new("/dev/full")).unwrap();
            let err = full
                .write_all(&vec![0; BUFFER_BYTES + 1])
                .expect_err("/dev/full is always full");
            assert!(format!("{err}").contains("/dev/full"), "{err}");
            assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        }
        let err = OutputFile::create(Path::new("/"))
            .err()
            .expect("a directory");
        assert!(matches!(err, OutputError::Directory(_)), "{err}");
    }

    #[test]
    fn the_input_file_is_never_an_output() {
        let d = scratch_dir("input");
        let rec = d.join("run.smrec");
        fs::write(&rec, b"recording").unwrap();
        let err = refuse_input(&rec, &rec).expect_err("same file");
        assert!(matches!(err, OutputError::SameAsInput { .. }), "{err}");
        // The same file by another name, too.
        let other = d.join("sub/../run.smrec");
        fs::create_dir_all(d.join("sub")).unwrap();
        assert!(refuse_input(&other, &rec).is_err());
        refuse_input(&d.join("out.png"), &rec).unwrap();
        assert_eq!(fs::read(&rec).unwrap(), b"recording");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn stdout_redirected_to_a_file_is_written_there() {
        // A child whose stdout is a regular file writes to `/dev/stdout`: this process's own
        // descriptors are what the test can redirect, so run the check in a child shell.
        let d = scratch_dir("stdout");
        let target = d.join("redirected.txt");
        fs::write(&target, b"header\n").unwrap();
        let f = OpenOptions::new().append(true).open(&target).unwrap();
        let me = std::env::current_exe().unwrap();
        let status = std::process::Command::new(me)
            .args(["--exact", "output::tests::write_to_dev_stdout", "--ignored"])
            .stdout(f)
            .status()
            .unwrap();
        assert!(status.success());
        let got = fs::read_to_string(&target).unwrap();
        assert!(got.starts_with("header\n"), "{got}");
        assert!(got.contains("through /dev/stdout"), "{got}");
        let _ = fs::remove_dir_all(&d);
    }

    /// Run by [`stdout_redirected_to_a_file_is_written_there`] with stdout redirected.
    #[test]
    #[ignore]
    fn write_to_dev_stdout() {
        let mut f = OutputFile::create(Path::new("/dev/stdout")).unwrap();
        f.write_all(b"through /dev/stdout\n").unwrap();
        f.commit().unwrap();
    }
}
