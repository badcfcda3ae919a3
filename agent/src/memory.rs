//! Giving back the resident pages only the agent's start needed.
//!
//! Booting runs code from all over the binary (config parsing, clap, aws-config's credential
//! chain, the SDK clients, TLS set-up), and on every fault in a file mapping the kernel maps the
//! cached pages of the surrounding 64 KiB window too (fault-around). So once booted, nearly all of
//! the agent's `.text` counts in its resident set although an idle agent runs a small part of it
//! (docs/resident-memory.md). When the boot is done, the agent unmaps the present pages of its
//! own executable's read-only mappings with `MADV_DONTNEED`: the pages stay in the page cache, and
//! what runs again is mapped again on first use (a minor fault, no disk read while the page cache
//! holds the page; the first restart after boot pays a few of them).
//!
//! Only mappings of the executable itself (never unmapped while it runs) that are private, not
//! writable and hold no anonymous (copied-on-write) page are touched: dropping such a page loses
//! nothing, it is the file's content. The relocated read-only data (RELRO: written by the loader
//! before it was made read-only) has anonymous pages and is left alone, as is everything
//! writable.

use std::path::Path;

/// One mapping of `/proc/self/smaps`, as far as it matters here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// The mapped file, or a pseudo name such as `[heap]`, or empty.
    pub path: String,
    /// Resident KiB.
    pub rss_kib: u64,
    /// Anonymous (copied or never file-backed) KiB.
    pub anon_kib: u64,
}

impl Mapping {
    /// Safe to drop its pages: private, readable, not writable, file-backed by `exe`, no
    /// anonymous page.
    #[must_use]
    pub fn releasable(&self, exe: &str) -> bool {
        let p = self.perms.as_bytes();
        p.len() == 4
            && p[0] == b'r'
            && p[1] == b'-'
            && p[3] == b'p'
            && self.path == exe
            && self.anon_kib == 0
            && self.end > self.start
    }
}

/// Parses `/proc/PID/smaps` text. Lines it does not know are skipped.
#[must_use]
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(m) = header(line) {
            out.push(m);
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let mut it = line.split_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(kib) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "Rss:" => cur.rss_kib = kib,
            "Anonymous:" => cur.anon_kib = kib,
            _ => {}
        }
    }
    out
}

/// `start-end perms offset dev inode [path]`, or `None` for a field line.
fn header(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let (_offset, _dev, _inode) = (it.next()?, it.next()?, it.next()?);
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    if perms.len() != 4 {
        return None;
    }
    Some(Mapping {
        start,
        end,
        perms: perms.to_owned(),
        path: it.next().unwrap_or("").trim_start().to_owned(),
        rss_kib: 0,
        anon_kib: 0,
    })
}

/// Unmaps the present pages of the executable's read-only file mappings (see the module docs).
/// Returns the resident KiB they held.
pub fn release_startup_pages() -> std::io::Result<u64> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    release(&parse_smaps(&smaps), &exe)
}

fn release(maps: &[Mapping], exe: &Path) -> std::io::Result<u64> {
    let Some(exe) = exe.to_str() else {
        return Ok(0);
    };
    let mut kib = 0;
    for m in maps.iter().filter(|m| m.releasable(exe) && m.rss_kib > 0) {
        // SAFETY: the range is exactly one private, read-only mapping of the executable file
        // that has no anonymous page (checked above), so every present page is a page of the
        // file and dropping it loses no data; the executable is never unmapped while it runs.
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        kib += m.rss_kib;
    }
    Ok(kib)
}

/// Resident KiB of this process (`VmRSS`), for the log line.
#[must_use]
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5600a0000000-5600a0100000 r--p 00000000 fd:01 4242                       /usr/bin/bake-agent
Size:               1024 kB
Rss:                 900 kB
Anonymous:             0 kB
5600a0100000-5600a0700000 r-xp 00100000 fd:01 4242                       /usr/bin/bake-agent
Size:               6144 kB
Rss:                6000 kB
Anonymous:             0 kB
5600a0700000-5600a0800000 r--p 00700000 fd:01 4242                       /usr/bin/bake-agent
Size:               1024 kB
Rss:                1024 kB
Anonymous:           920 kB
5600a0800000-5600a0810000 rw-p 00800000 fd:01 4242                       /usr/bin/bake-agent
Rss:                  64 kB
Anonymous:            40 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 800 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r--s 00000000 fd:01 77                         /usr/bin/bake-agent
Rss:                  10 kB
Anonymous:             0 kB
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn test_parse_smaps_reads_ranges_perms_paths_and_sizes() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 7);
        assert_eq!(maps[1].start, 0x5600_a010_0000);
        assert_eq!(maps[1].end, 0x5600_a070_0000);
        assert_eq!(maps[1].perms, "r-xp");
        assert_eq!(maps[1].path, "/usr/bin/bake-agent");
        assert_eq!((maps[1].rss_kib, maps[1].anon_kib), (6000, 0));
        assert_eq!((maps[2].rss_kib, maps[2].anon_kib), (1024, 920));
        assert_eq!(maps[6].path, "[vdso]");
    }

    #[test]
    fn test_only_clean_private_read_only_mappings_of_the_executable_are_released() {
        let maps = parse_smaps(SMAPS);
        let picked: Vec<usize> = maps
            .iter()
            .enumerate()
            .filter(|(_, m)| m.releasable("/usr/bin/bake-agent"))
            .map(|(i, _)| i)
            .collect();
        // Not: RELRO with copied pages (2), writable (3), another file (4), shared (5), vdso (6).
        assert_eq!(picked, vec![0, 1]);
    }

    #[test]
    fn test_release_drops_resident_pages_of_this_test_binary_and_it_still_runs() {
        // The test harness has run by now, so pages of this binary are resident: release them
        // and check the resident set shrank, and that code runs on (it is mapped again on use).
        let before = resident_kib().unwrap();
        let released = release_startup_pages().unwrap();
        let after = resident_kib().unwrap();
        assert!(released > 0, "nothing released");
        assert!(
            after < before,
            "resident {before} KiB before, {after} KiB after releasing {released} KiB"
        );
        // Code runs on from pages mapped again, and a second release finds the executable's
        // mappings again (only what ran since is resident).
        let maps = parse_smaps(&std::fs::read_to_string("/proc/self/smaps").unwrap());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        assert!(maps.iter().any(|m| m.releasable(exe)));
        let again = release_startup_pages().unwrap();
        assert!(
            again < released,
            "{again} KiB resident again, {released} KiB before"
        );
    }
}
