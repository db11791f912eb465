//! File sources: tail files matching globs through every kind of rotation.
//!
//! Being built (issue 3): until then `run` refuses file sources with a clear error.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{SourceConfig, TailerConfig};
use crate::event::Line;

/// Tails every file source until cancelled.
pub async fn run(
    sources: Vec<SourceConfig>,
    _tailer: TailerConfig,
    _state_dir: Option<PathBuf>,
    _tx: mpsc::Sender<Vec<Line>>,
    _cancel: CancellationToken,
    _clock: Clock,
) -> std::io::Result<()> {
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_ref()).collect();
    Err(std::io::Error::other(format!(
        "file sources are not supported yet ({}); pipe the log on stdin",
        names.join(", ")
    )))
}
