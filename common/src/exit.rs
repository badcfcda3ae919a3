//! Exit codes through an error chain, and result lines on stdout.
//!
//! Each binary lists its own codes (an enum in its `exit.rs`) and decides the code of an error in
//! one function of its own, which walks the chain with [`first_code`]: an error raised with its
//! code already chosen ([`Coded`]) gives that code, any other error the code the binary's match
//! gives its type, the first decided one from the outside in.

use std::error::Error;
use std::fmt::Display;

/// An error with the exit code it should produce, found anywhere in an error chain by
/// [`first_code`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded<C> {
    /// The exit code.
    pub code: C,
    /// What went wrong.
    pub message: String,
}

impl<C> Coded<C> {
    /// `message` with exit code `code`.
    pub fn new(code: C, message: impl Display) -> Self {
        Self {
            code,
            message: message.to_string(),
        }
    }
}

/// The errors of `err`'s chain, `err` first, then each one's `source()`.
pub fn chain<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn Error + 'static)| (*e).source())
}

/// The code of the outermost error of `err`'s chain that has one: a [`Coded<C>`] its own, any
/// other what `decide` says of it (`None`: undecided, look further in).
pub fn first_code<C: Copy + std::fmt::Debug + 'static>(
    err: &(dyn Error + 'static),
    decide: impl Fn(&(dyn Error + 'static)) -> Option<C>,
) -> Option<C> {
    chain(err).find_map(|e| {
        e.downcast_ref::<Coded<C>>()
            .map(|c| c.code)
            .or_else(|| decide(e))
    })
}

/// A result line could not be written on stdout.
#[derive(Debug, thiserror::Error)]
pub enum StdoutError {
    /// The reader went away (`bake status | head -0`): a command reports it by its exit code
    /// alone (128 + SIGPIPE, as a shell does).
    #[error("stdout is closed")]
    Closed,
    /// Another write error (a full disk under a redirect).
    #[error("cannot write the result to stdout: {0}")]
    Write(std::io::Error),
}

/// Writes `line` and a newline to `out` (stdout) and flushes; a closed pipe is
/// [`StdoutError::Closed`].
///
/// # Errors
/// [`StdoutError`].
pub fn write_line(out: &mut impl std::io::Write, line: impl Display) -> Result<(), StdoutError> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => StdoutError::Closed,
            _ => StdoutError::Write(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Code {
        Aws,
        Config,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {source}")]
    struct Outer {
        source: Coded<Code>,
    }

    #[test]
    fn test_first_code_is_the_outermost_decided() {
        let inner = Coded::new(Code::Aws, "describing x");
        let outer = Outer { source: inner };
        // Undecided outside: the Coded inside gives its code.
        assert_eq!(first_code(&outer, |_| None), Some(Code::Aws));
        // Decided outside: that wins over the code inside.
        let decide = |e: &(dyn Error + 'static)| e.is::<Outer>().then_some(Code::Config);
        assert_eq!(first_code(&outer, decide), Some(Code::Config));
        let plain = std::io::Error::other("x");
        assert_eq!(first_code::<Code>(&plain, |_| None), None);
        assert_eq!(chain(&outer).count(), 2);
    }

    #[test]
    fn test_write_line_tells_a_closed_pipe() {
        struct Pipe(std::io::ErrorKind);
        impl std::io::Write for Pipe {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(self.0.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let closed = write_line(&mut Pipe(std::io::ErrorKind::BrokenPipe), "x");
        assert!(matches!(closed, Err(StdoutError::Closed)), "{closed:?}");
        let full = write_line(&mut Pipe(std::io::ErrorKind::StorageFull), "x");
        assert!(matches!(full, Err(StdoutError::Write(_))), "{full:?}");
        let mut out = Vec::new();
        write_line(&mut out, format_args!("a{}", 1)).unwrap();
        assert_eq!(out, b"a1\n");
    }
}
