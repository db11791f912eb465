//! The stdin source: reads standard input in large chunks and sends line batches.
//!
//! End of input ends the source, which ends the pipeline (classify, counters and notify
//! drain after it), so `some-job 2>&1 | logwarden` exits when the job does.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::LineSplitter;
use crate::clock::Clock;
use crate::config::SourceConfig;
use crate::event::{Labels, Line};

/// Bytes read per `read` call.
const CHUNK: usize = 256 * 1024;

/// Reads `input` until EOF or cancellation, sending lines in batches (one batch per read).
pub async fn run<R: AsyncRead + Unpin>(
    mut input: R,
    src: SourceConfig,
    tx: mpsc::Sender<Vec<Line>>,
    cancel: CancellationToken,
    clock: Clock,
) -> std::io::Result<()> {
    let name: Arc<str> = src.name.clone();
    let labels: Labels = src.static_labels();
    let mut splitter = LineSplitter::new(src.max_line_bytes);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            () = cancel.cancelled() => 0,
            // `read` is cancel-safe: if cancellation wins, no bytes were consumed.
            n = input.read(&mut buf) => n?,
        };
        let at = clock.now();
        let mut batch = Vec::new();
        let mut emit = |l: super::SplitLine<'_>| {
            batch.push(Line {
                source: name.clone(),
                stream: 0,
                labels: labels.clone(),
                bytes: l.bytes.to_vec(),
                truncated: l.truncated,
                catch_up: false,
                backfill: false,
                at,
            })
        };
        if n == 0 {
            splitter.finish(&mut emit);
        } else {
            splitter.push(&buf[..n], &mut emit);
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return Ok(()); // downstream gone: shutting down
        }
        if n == 0 {
            return Ok(());
        }
    }
}
