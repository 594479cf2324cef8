//! Paths from a pipeline file, which a tenant may write: each stays inside one folder (the
//! pipeline file's, or `--data-dir`), so that no pipeline reads another tenant's file or
//! appends to one outside it. `confine` checks the text, `open_read` and `open_append`
//! what the file system makes of it (symbolic links, devices, fifos).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// A path from a pipeline file: `path` (already joined to `base`) must stay inside `base`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confined {
    pub base: PathBuf,
    pub path: PathBuf,
    /// A file it must not be, however reached: the pipeline file (device, inode).
    pub forbidden: Option<(u64, u64)>,
}

impl Confined {
    pub fn open_read(&self) -> io::Result<File> {
        self.allowed(open_read(&self.base, &self.path)?)
    }

    fn allowed(&self, file: File) -> io::Result<File> {
        let meta = file.metadata()?;
        match self.forbidden == Some((meta.dev(), meta.ino())) {
            true => Err(refused("is the pipeline file".into())),
            false => Ok(file),
        }
    }

    /// Opens for appending; the tenant's folder is made if missing (a tenant's first
    /// file to write), inside a folder that must exist.
    pub fn open_append(&self) -> io::Result<File> {
        match std::fs::DirBuilder::new().mode(0o750).create(&self.base) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        self.allowed(open_append(&self.base, &self.path)?)
    }

    /// The whole file, if it is at most `max` bytes (a component: regular, inside the
    /// folder, like any other path).
    pub fn read_at_most(&self, max: u64) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(self.open_read()?, max + 1), &mut bytes)?;
        match bytes.len() as u64 > max {
            true => Err(refused(format!("is larger than {} MiB", max >> 20))),
            false => Ok(bytes),
        }
    }
}

/// `given` joined to `base`, unless it is empty, absolute or climbs out with `..`.
pub fn confine(base: &Path, given: &Path) -> Result<PathBuf, String> {
    if given.as_os_str().is_empty() {
        return Err("a path must not be empty".into());
    }
    if given.has_root() || given.is_absolute() {
        return Err(format!(
            "path {given:?} must be relative to the pipeline file's folder (or --data-dir)"
        ));
    }
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(format!("path {given:?} must not contain \"..\""));
    }
    Ok(base.join(given))
}

/// Opens `path` (inside `base`) for reading.
pub fn open_read(base: &Path, path: &Path) -> io::Result<File> {
    open(base, path, OpenOptions::new().read(true))
}

/// Opens `path` (inside `base`) for appending, creating it (0644) if missing.
pub fn open_append(base: &Path, path: &Path) -> io::Result<File> {
    open(
        base,
        path,
        OpenOptions::new().append(true).create(true).mode(0o644),
    )
}

/// Opens a regular file inside `base` only. Its folder is checked first, so that nothing
/// outside is created or opened (opening a device can itself act); then the opened file
/// is checked to be the one the path leads to.
fn open(base: &Path, path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let base = canonical(base)?;
    inside(&base, &canonical(folder_of(path))?)?;
    // No following a final symbolic link; no blocking on a fifo; no controlling terminal.
    // O_NONBLOCK changes nothing for the regular files that are kept.
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let file = options
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("is a symbolic link".into()),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused("is not a regular file".into()));
    }
    // A second name for the file may be anywhere on the file system, another tenant's
    // file among them.
    if meta.nlink() > 1 {
        return Err(refused("has other hard links".into()));
    }
    let at = canonical(path)?;
    inside(&base, &at)?;
    if !same_file(&meta, &std::fs::metadata(&at)?) {
        return Err(refused("changed while being opened".into()));
    }
    Ok(file)
}

/// The folder a path names its file in: `.` for a bare file name.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn canonical(path: &Path) -> io::Result<PathBuf> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    path.canonicalize()
}

fn inside(base: &Path, at: &Path) -> io::Result<()> {
    match at.starts_with(base) {
        true => Ok(()),
        false => Err(refused(format!("leads outside {}", base.display()))),
    }
}

fn same_file(a: &Metadata, b: &Metadata) -> bool {
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("paths-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("base/sub")).unwrap();
        std::fs::write(dir.join("outside.txt"), "secret").unwrap();
        dir
    }

    fn error(r: io::Result<File>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn confine_refuses_absolute_parent_and_empty_paths() {
        let base = Path::new("/data");
        assert_eq!(
            confine(base, Path::new("a/b.jsonl")),
            Ok(PathBuf::from("/data/a/b.jsonl"))
        );
        let e = confine(base, Path::new("/etc/passwd")).unwrap_err();
        assert!(e.contains("path \"/etc/passwd\" must be relative"), "{e}");
        let e = confine(base, Path::new("../x")).unwrap_err();
        assert_eq!(e, "path \"../x\" must not contain \"..\"");
        assert!(confine(base, Path::new("a/../../x")).is_err());
        assert!(confine(base, Path::new("")).is_err());
    }

    #[test]
    fn regular_files_inside_open_and_append_creates() {
        let dir = scratch("ok");
        let base = dir.join("base");
        std::fs::write(base.join("sub/in.jsonl"), "{}\n").unwrap();
        let mut text = String::new();
        open_read(&base, &base.join("sub/in.jsonl"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{}\n");
        let out = base.join("out.jsonl");
        open_append(&base, &out).unwrap().write_all(b"a\n").unwrap();
        open_append(&base, &out).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nb\n");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o022, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlinks_out_devices_and_folders_are_refused() {
        let dir = scratch("bad");
        let base = dir.join("base");
        symlink(dir.join("outside.txt"), base.join("link.txt")).unwrap();
        symlink(&dir, base.join("up")).unwrap();
        symlink("/dev", base.join("dev")).unwrap();
        let e = error(open_read(&base, &base.join("link.txt")));
        assert!(e.contains("is a symbolic link"), "{e}");
        let e = error(open_append(&base, &base.join("link.txt")));
        assert!(e.contains("is a symbolic link"), "{e}");
        let e = error(open_read(&base, &base.join("up/outside.txt")));
        assert!(e.contains("leads outside"), "{e}");
        let e = error(open_append(&base, &base.join("up/new.txt")));
        assert!(e.contains("leads outside"), "{e}");
        assert!(!dir.join("new.txt").exists());
        let e = error(open_read(&base, &base.join("dev/zero")));
        assert!(e.contains("leads outside"), "{e}");
        let e = error(open_read(&base, &base.join("sub")));
        assert!(e.contains("is not a regular file"), "{e}");
        let e = error(open_read(Path::new("/dev"), Path::new("/dev/zero")));
        assert!(e.contains("is not a regular file"), "{e}");
        std::fs::hard_link(dir.join("outside.txt"), base.join("hard.txt")).unwrap();
        let e = error(open_read(&base, &base.join("hard.txt")));
        assert!(e.contains("has other hard links"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("outside.txt")).unwrap(),
            "secret"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pipeline_file_is_refused_however_it_is_reached() {
        let dir = scratch("own");
        let base = dir.join("base");
        std::fs::write(base.join("p.toml"), "[[pipeline]]").unwrap();
        symlink(&base, base.join("again")).unwrap();
        let meta = std::fs::metadata(base.join("p.toml")).unwrap();
        let at = |path: &str| Confined {
            base: base.clone(),
            path: base.join(path),
            forbidden: Some((meta.dev(), meta.ino())),
        };
        assert!(error(at("again/p.toml").open_read()).contains("is the pipeline file"));
        assert!(error(at("again/p.toml").open_append()).contains("is the pipeline file"));
        assert!(at("sub/../other.txt").open_append().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
