//! A command run with its stderr on a terminal (a pty of a given size), as an operator in a
//! terminal sees it, and what the screen shows of the bytes written to it.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What a command run by [`run_on_terminal`] left.
#[derive(Debug)]
pub struct TerminalRun {
    /// Its exit code (-1 when a signal ended it).
    pub code: i32,
    /// Its stdout (a pipe: no terminal).
    pub stdout: String,
    /// The bytes it wrote to the terminal, escape sequences included.
    pub raw: String,
}

impl TerminalRun {
    /// What the terminal showed ([`screen_lines`] of [`TerminalRun::raw`]).
    #[must_use]
    pub fn screen(&self) -> String {
        screen_lines(&self.raw)
    }
}

/// Runs `cmd` with stdin closed, stdout a pipe and stderr a fresh pty of `cols`×`rows` (with
/// `TERM=xterm-256color`); kills it after `timeout`. Returns once it exited and the terminal
/// was read to its end.
pub fn run_on_terminal(
    mut cmd: Command,
    cols: u16,
    rows: u16,
    timeout: Duration,
) -> anyhow::Result<TerminalRun> {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).context("openpty")?;
    let slave: OwnedFd = pty.slave;
    let mut child = cmd
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .context("starting the command on a terminal")?;
    // `cmd` holds the parent's copy of the slave: dropped, only the child holds the terminal,
    // and reading its master end ends (EIO) once the child exits.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let tty = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match master.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    let mut out = child.stdout.take().context("the child's stdout")?;
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait()? {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the command on a terminal did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap_or_default();
    let raw = tty.join().unwrap_or_default();
    Ok(TerminalRun { code, stdout, raw })
}

/// What a terminal shows of `s`, line by line: ANSI escape sequences (CSI `ESC [ … final`, and
/// two-byte `ESC x`: indicatif's cursor moves and line clears) become line breaks, as do
/// carriage returns.
#[must_use]
pub fn screen_lines(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            out.push('\n');
            continue;
        }
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        out.push('\n');
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// The rollout view's instance lines in `text`, per instance id, in order: (phase, release).
/// An instance line is what follows `marker` when it starts with `i-`, its cells separated by
/// two or more spaces: id, phase, release.
#[must_use]
pub fn view_lines(text: &str, marker: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut lines: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.split_once(marker).map(|(_, r)| r) else {
            continue;
        };
        if !rest.starts_with("i-") {
            continue;
        }
        let cells: Vec<&str> = rest
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        lines.entry(cells[0].to_owned()).or_default().push((
            cells.get(1).unwrap_or(&"").to_string(),
            cells.get(2).unwrap_or(&"").to_string(),
        ));
    }
    lines
}

/// The progress bar's lines on `screen` (`refresh [3s] [=====>    ]  50% InProgress, …`),
/// each checked to show one elapsed time and one percentage before the refresh's own status
/// reason (which may say a percentage of its own). Fails when no bar was drawn.
pub fn bars(screen: &str) -> anyhow::Result<Vec<String>> {
    let bars: Vec<String> = screen
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("refresh [") && l.contains('%'))
        .map(str::to_owned)
        .collect();
    if bars.is_empty() {
        bail!("no bar drawn:\n{screen}");
    }
    for b in &bars {
        if b.contains("elapsed") {
            bail!("more than one elapsed time: {b:?}");
        }
        let own = b.split(": ").next().unwrap_or_default();
        if own.matches('%').count() != 1 {
            bail!("not one percentage: {b:?}");
        }
        if own.matches('[').count() != 2 {
            bail!("not the elapsed time and the bar: {b:?}");
        }
    }
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_screen_lines_break_at_escapes_and_carriage_returns() {
        let s = "a\r\u{1b}[2Kb\u{1b}7c\n";
        assert_eq!(screen_lines(s), "a\n\nb\nc\n");
    }

    #[test]
    fn test_view_lines_and_bars() {
        let screen = "refresh i-1  in service  v1 ami-1\n\
                      refresh [3s] [==>   ]  50% InProgress: 50% done\n\
                      refresh i-1  terminated  v1 ami-1\n";
        let v = view_lines(screen, "refresh ");
        assert_eq!(
            v["i-1"],
            [
                ("in service".to_owned(), "v1 ami-1".to_owned()),
                ("terminated".to_owned(), "v1 ami-1".to_owned())
            ]
        );
        assert_eq!(bars(screen).unwrap().len(), 1);
        assert!(bars("refresh [3s] [==>]  50% 1 elapsed").is_err());
        assert!(bars("nothing").is_err());
    }

    #[test]
    fn test_a_command_on_a_terminal_sees_one_and_its_size() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "test -t 2 && stty size <&2 >&2; echo out"]);
        let run = run_on_terminal(cmd, 120, 40, Duration::from_secs(10)).unwrap();
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.stdout, "out\n");
        assert!(run.screen().contains("40 120"), "{run:?}");
    }
}
