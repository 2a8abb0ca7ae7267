//! A child process whose stdout and stderr arrive as lines on one channel,
//! in the order they were written: make (progress from stdout, errors from
//! stderr), vng (KTAP on stdout, the console on stderr) and the KVM probe's
//! QEMU all need both pipes read at once, or the child blocks on a full one.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A running child and the lines it writes.
pub struct Spawned {
    pub child: Child,
    /// Every line of both pipes (invalid UTF-8 replaced, line ending cut);
    /// disconnected once the child has closed both.
    pub lines: Receiver<(Stream, String)>,
    readers: Vec<JoinHandle<()>>,
}

/// Starts `command` with stdout and stderr piped, one reader thread per
/// pipe; stdin is as the caller set it.
pub fn spawn_lines(command: &mut Command) -> std::io::Result<Spawned> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let (tx, lines) = channel();
    let mut readers = Vec::new();
    let out = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    for (stream, pipe) in [(Stream::Stdout, out), (Stream::Stderr, err)] {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        if tx.send((stream, line)).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    Ok(Spawned {
        child,
        lines,
        readers,
    })
}

impl Spawned {
    /// Waits for the child (already exited or killed, or about to) and
    /// for its reader threads; lines not yet received are dropped.
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        drop(self.lines);
        let status = self.child.wait();
        for reader in self.readers {
            // A reader that panicked has nothing left to deliver.
            let _ = reader.join();
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pipes_arrive_tagged_and_the_status_comes_back() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; printf 'no newline'; exit 3"]);
        let spawned = spawn_lines(&mut command).unwrap();
        let mut got: Vec<(Stream, String)> = spawned.lines.iter().collect();
        got.sort_by_key(|(s, l)| (*s == Stream::Stderr, l.clone()));
        assert_eq!(
            got,
            [
                (Stream::Stdout, "no newline".to_string()),
                (Stream::Stdout, "out".to_string()),
                (Stream::Stderr, "err".to_string()),
            ]
        );
        assert_eq!(spawned.wait().unwrap().code(), Some(3));
    }
}
