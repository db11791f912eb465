//! The stdin source: reads standard input in large chunks and sends line batches.
//!
//! End of input ends the source, which ends the pipeline (classify, counters and notify
//! drain after it), so `some-job 2>&1 | logwarden` exits when the job does.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{send_batches, LineSplitter, BATCH_LINES};
use crate::clock::Clock;
use crate::config::SourceConfig;
use crate::event::{Line, LineBytes, Origin};

/// Bytes read per `read` call.
const CHUNK: usize = 256 * 1024;
/// Bytes handed to the splitter at a time (see [`run`]).
const PIECE: usize = 16 * 1024;

/// Reads `input` until EOF or cancellation, sending lines in batches of at most
/// [`BATCH_LINES`] (about one batch per read of ordinary lines). A read is split in pieces
/// of [`PIECE`] bytes, so a read of short lines never builds more than a batch and a piece.
pub async fn run<R: AsyncRead + Unpin>(
    mut input: R,
    src: SourceConfig,
    tx: mpsc::Sender<Vec<Line>>,
    cancel: CancellationToken,
    clock: Clock,
) -> std::io::Result<()> {
    let origin = Origin::new(src.name.clone(), 0, src.static_labels());
    let mut splitter = LineSplitter::new(src.max_line_bytes);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            () = cancel.cancelled() => 0,
            // `read` is cancel-safe: if cancellation wins, no bytes were consumed.
            n = input.read(&mut buf) => n?,
        };
        let at = clock.now();
        // Sized for the read's lines (a batch of `Line`s grown by doubling was copied about
        // twice over).
        let mut left = memchr::memchr_iter(b'\n', &buf[..n]).count() + 1;
        let mut batch = Vec::with_capacity(left.min(BATCH_LINES));
        let line = |chunk: &Arc<[u8]>, l: super::SplitLine<'_>| Line {
            origin: origin.clone(),
            bytes: LineBytes::within(chunk, l.bytes),
            truncated: l.truncated,
            catch_up: false,
            backfill: false,
            at,
        };
        if n == 0 {
            let none: Arc<[u8]> = Arc::from(&[][..]);
            splitter.finish(|l| batch.push(line(&none, l)));
        }
        for piece in buf[..n].chunks(PIECE) {
            // The piece's lines share one copy of it.
            let chunk: Arc<[u8]> = Arc::from(piece);
            splitter.push(&chunk, |l| batch.push(line(&chunk, l)));
            if batch.len() >= BATCH_LINES {
                left = left.saturating_sub(batch.len());
                let full = std::mem::replace(&mut batch, Vec::with_capacity(left.min(BATCH_LINES)));
                if !send_batches(&tx, full).await {
                    return Ok(()); // downstream gone: shutting down
                }
            }
        }
        if !send_batches(&tx, batch).await {
            return Ok(()); // downstream gone: shutting down
        }
        if n == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7: a read of short lines (256 KiB of 2-byte lines is ~130,000 lines) arrives
    /// in batches of at most a batch and a piece, in order, every line once.
    #[tokio::test]
    async fn batches_of_short_lines_are_bounded_and_complete() {
        let input: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{}\n", i % 10).into_bytes())
            .collect();
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn(run(
            std::io::Cursor::new(input),
            SourceConfig::stdin(),
            tx,
            CancellationToken::new(),
            Clock::start(),
        ));
        let mut n = 0u32;
        while let Some(batch) = rx.recv().await {
            assert!(
                batch.len() <= BATCH_LINES + PIECE / 2,
                "{} lines",
                batch.len()
            );
            for l in batch {
                assert_eq!(l.bytes, format!("{}", n % 10).into_bytes());
                n += 1;
            }
        }
        assert_eq!(n, 200_000);
        reader.await.unwrap().unwrap();
    }
}
