//! The control protocol over a Unix socket: one request line, one answer line, per connection.
//!
//! Request: `cut`, `fail-writes PREFIX`, `fail-space PREFIX`, `heal` or `stats`. Answer: `ok`,
//! `ok <stats>` or `err <message>`. The server answers `ok` to `cut` only once the backing
//! directory is the durable image. It serves one connection at a time, so commands never
//! overlap. Owns no file system state: it calls [`Control`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::mount::Control;
use crate::Error;

/// Longest request or answer line, in bytes.
const LINE_BYTES_MAX: u64 = 4096;
/// How long the server waits for a client's request line (a client that never sends one must
/// not block the others).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client waits for the answer: a cut of a large data directory takes a while.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(300);

/// A control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Cut,
    FailWrites(PathBuf),
    FailSpace(PathBuf),
    Heal,
    Stats,
}

impl Command {
    /// Parses a request line (without its newline).
    ///
    /// # Errors
    /// If the verb is unknown or its argument is missing or extra.
    pub fn parse(line: &str) -> Result<Command, Error> {
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb, Some(argument)),
            None => (line, None),
        };
        match (verb, argument) {
            ("cut", None) => Ok(Command::Cut),
            ("heal", None) => Ok(Command::Heal),
            ("stats", None) => Ok(Command::Stats),
            ("fail-writes", Some(prefix)) => Ok(Command::FailWrites(PathBuf::from(prefix))),
            ("fail-space", Some(prefix)) => Ok(Command::FailSpace(PathBuf::from(prefix))),
            _ => Err(Error::Command(format!("{line:?}"))),
        }
    }

    /// The request line (without its newline).
    ///
    /// # Errors
    /// If a prefix is not UTF-8 or holds a newline.
    pub fn to_line(&self) -> Result<String, Error> {
        let with_prefix = |verb: &str, prefix: &Path| match prefix.to_str() {
            Some(text) if !text.contains('\n') => Ok(format!("{verb} {text}")),
            _ => Err(Error::Command(format!(
                "prefix {prefix:?} is not one line of UTF-8"
            ))),
        };
        match self {
            Command::Cut => Ok("cut".to_owned()),
            Command::Heal => Ok("heal".to_owned()),
            Command::Stats => Ok("stats".to_owned()),
            Command::FailWrites(prefix) => with_prefix("fail-writes", prefix),
            Command::FailSpace(prefix) => with_prefix("fail-space", prefix),
        }
    }
}

/// Reads one line of at most `LINE_BYTES_MAX` bytes, without its newline.
fn line_read(stream: &UnixStream) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(stream.take(LINE_BYTES_MAX)).read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long or cut short",
        ));
    }
    line.pop();
    Ok(line)
}

/// Sends `command` to the lossyfs listening on `socket` and returns the answer's text after
/// `ok` (empty for a bare `ok`).
///
/// # Errors
/// If the socket cannot be reached, the answer does not come within `timeout`, or lossyfs
/// answers `err` ([`Error::Remote`]).
pub fn request(socket: &Path, command: &Command, timeout: Duration) -> Result<String, Error> {
    let context = |what: &str| format!("{what} {}", socket.display());
    let mut stream =
        UnixStream::connect(socket).map_err(|e| Error::io(context("connecting to"), e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Error::io(context("configuring"), e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| Error::io(context("configuring"), e))?;
    let line = command.to_line()?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| Error::io(context("writing to"), e))?;
    let answer =
        line_read(&stream).map_err(|e| Error::io(context("reading the answer from"), e))?;
    if answer == "ok" {
        return Ok(String::new());
    }
    if let Some(text) = answer.strip_prefix("ok ") {
        return Ok(text.to_owned());
    }
    Err(Error::Remote(
        answer.strip_prefix("err ").unwrap_or(&answer).to_owned(),
    ))
}

/// The server side: a thread answering commands on a Unix socket. Dropping it stops the thread
/// and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `socket` (replacing a stale socket file) and starts answering. The socket exists
    /// once this returns, so a harness can wait for it to know the mount is ready.
    ///
    /// # Errors
    /// If the path exists and is not a socket, or binding fails.
    pub fn start(socket: &Path, control: Control) -> Result<ControlServer, Error> {
        if let Ok(metadata) = std::fs::symlink_metadata(socket) {
            if !metadata.file_type().is_socket() {
                return Err(Error::Setup(format!(
                    "{} exists and is not a socket",
                    socket.display()
                )));
            }
            std::fs::remove_file(socket)
                .map_err(|e| Error::io("removing a stale control socket", e))?;
        }
        let listener = UnixListener::bind(socket)
            .map_err(|e| Error::io(format!("binding control socket {}", socket.display()), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        // Serves until `Drop` sets `stop` and wakes `accept` with a connection of its own.
        let thread = std::thread::Builder::new()
            .name("lossyfs-control".to_owned())
            .spawn(move || serve(&listener, &control, &stop_seen))
            .map_err(|e| Error::io("starting the control thread", e))?;
        Ok(ControlServer {
            socket: socket.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept; the thread sees `stop` and ends.
        if UnixStream::connect(&self.socket).is_ok() {
            if let Some(thread) = self.thread.take() {
                if thread.join().is_err() {
                    tracing::error!("the control thread panicked");
                }
            }
        }
        if let Err(error) = std::fs::remove_file(&self.socket) {
            tracing::warn!(%error, socket = %self.socket.display(), "could not remove the control socket");
        }
    }
}

fn serve(listener: &UnixListener, control: &Control, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(error) = answer(&stream, control) {
                    tracing::warn!(%error, "control connection failed");
                }
            }
            Err(error) => tracing::warn!(%error, "control accept failed"),
        }
    }
}

fn answer(stream: &UnixStream, control: &Control) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let line = line_read(stream)?;
    let reply = match Command::parse(&line).and_then(|command| {
        tracing::info!(command = %line, "control command");
        control.execute(&command)
    }) {
        Ok(text) if text == "ok" || text.is_empty() => "ok".to_owned(),
        Ok(text) => format!("ok {text}"),
        Err(error) => {
            tracing::error!(command = %line, %error, "control command failed");
            format!("err {error}").replace('\n', " ")
        }
    };
    let mut writer = stream;
    writer.write_all(format!("{reply}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::Command;
    use std::path::PathBuf;

    #[test]
    fn commands_round_trip_through_their_line() {
        let commands = [
            Command::Cut,
            Command::Heal,
            Command::Stats,
            Command::FailWrites(PathBuf::from("raft/log")),
            Command::FailSpace(PathBuf::from("a dir/with space")),
        ];
        for command in commands {
            let line = command
                .to_line()
                .expect("every test prefix is one UTF-8 line");
            assert_eq!(Command::parse(&line).ok(), Some(command));
        }
        assert!(Command::parse("cut now").is_err());
        assert!(Command::parse("fail-writes").is_err());
        assert!(Command::parse("reboot").is_err());
    }
}
