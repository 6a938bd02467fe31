//! What a crash leaves in the store's directories, removed at start: downloads in flight
//! in the spool, and a local store's half-written files.

use super::backend::Backend;

impl Backend {
    /// Removes what a crash left behind: downloads in flight in the spool, and a local
    /// store's half-written files (`object_store` writes `<name>#<n>`, then renames it).
    /// Returns how many files went.
    pub fn clean_leftovers(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        std::fs::create_dir_all(&self.spool)?;
        for entry in std::fs::read_dir(&self.spool)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if let Some(dir) = &self.local {
            removed += remove_staged(dir)?;
        }
        Ok(removed)
    }
}

/// Removes the files under `dir` that `object_store` was still writing (`<name>#<n>`).
fn remove_staged(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() && name != "spool" {
                pending.push(entry.path());
            } else if kind.is_file() && is_staged(&name) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// `<name>#<digits>`: a file `object_store`'s local store writes before renaming it.
fn is_staged(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_names_are_object_stores_half_written_files() {
        assert!(is_staged("abc#1") && is_staged("x#123"));
        assert!(!is_staged("abc") && !is_staged("#1") && !is_staged("a#") && !is_staged("a#1b"));
    }
}
