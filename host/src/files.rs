//! The node's files are private to its user: the data directory and every directory the node
//! makes are 0700, every file it writes 0600 — created so, never opened up and closed later.
//!
//! The data directory holds every znode and every deployed recipe; the compiled directory holds
//! machine code the node runs. [`make_private_by_default`] sets the process's file-creation mask
//! so that what the storage engine creates (the journal, snapshots) is private as well.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the directories a node makes.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the files a node writes.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Makes every file and directory this process creates from now on private to its user (file
/// mode creation mask 077), whoever creates it: the node's own code or the storage engine's.
/// For the server process (`cairn serve`); it changes the mask of the whole process.
pub fn make_private_by_default() {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

/// Creates `dir` (and missing parents) as 0700, or makes an existing one 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != PRIVATE_DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
    }
    Ok(())
}

/// Writes `bytes` to `path`, created as 0600 (an existing file keeps its mode, so write to a
/// new file and rename it into place).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_private() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("a/b");
        private_dir(&dir).expect("created");
        assert_eq!(mode(&dir), PRIVATE_DIR_MODE);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("again");
        assert_eq!(mode(&dir), PRIVATE_DIR_MODE, "an existing open directory is closed");
        let file = dir.join("key");
        write_private(&file, b"secret").expect("written");
        assert_eq!(mode(&file), PRIVATE_FILE_MODE);
        assert_eq!(std::fs::read(&file).expect("read"), b"secret");
    }
}
