//! Limits and defaults that shape walfetch's behaviour, each with the reason for its value.

use std::time::Duration;

/// Size of the buffer used to copy decoded bytes to disk: large writes keep syscalls
/// few (PostgreSQL's own 8 KiB writes are what makes naive copies slow), and one buffer
/// per worker keeps memory bounded.
pub const COPY_BUFFER_SIZE: usize = 1 << 20;

/// Retries of a storage request after a transient failure, before giving up.
pub const MAX_RETRIES: usize = 8;

/// First delay between retries; doubled each time, with jitter.
pub const RETRY_MIN_DELAY: Duration = Duration::from_millis(200);

/// Longest delay between two retries, so a restore_command never sleeps for minutes.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(10);

/// Connecting to storage must finish within this time, or the attempt counts as a
/// connection failure (a round trip to any S3 region takes well under a second).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request that never reached a server (refused, unresolvable, no answer to the
/// connection) is retried only within this time from the operation's start: a wrong or
/// dead endpoint then fails in seconds (at most this plus one [`CONNECT_TIMEOUT`]),
/// while a server restarting behind its address is still waited for.
pub const CONNECT_RETRY_WINDOW: Duration = Duration::from_secs(6);

/// A request that has sent no response headers for this long, or a response body that
/// delivers no byte for this long, is a stall: abandoned and retried (a body resumes with
/// a ranged GET). `WALFETCH_IO_TIMEOUT` (seconds) overrides it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Default size of one uncompressed tar partition written by backup-push (wal-g's is
/// 1 GiB): small enough that a restore's partitions stay balanced across cores and
/// streams. With 256 MiB, one partition of poorly compressible rows held half of a
/// 1.3 GB backup's bytes and an S3 restore waited on that one stream (2.4-2.7 s; 64 MiB:
/// 1.7-1.9 s). A file larger than this still makes one partition of its own.
pub const DEFAULT_TAR_SIZE_THRESHOLD: u64 = 64 << 20;

/// Connections a restore from remote storage keeps receiving at once, unless
/// `WALG_DOWNLOAD_CONCURRENCY` says (wal-g's default is 10 too): one S3 connection carries
/// tens of MB/s on the internet, so throughput comes from many.
pub const REMOTE_TRANSFERS: usize = 10;

/// The WAL segment size PostgreSQL uses unless `initdb --wal-segsize` says otherwise.
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 << 20;

/// Name of the marker file a restore leaves in the target until it has fully succeeded.
pub const INCOMPLETE_MARKER: &str = "WALFETCH_RESTORE_INCOMPLETE";

/// Name of the journal of finished partitions a restore keeps in the target until it
/// has fully succeeded ([`crate::restore::journal`]).
pub const RESTORE_JOURNAL: &str = "WALFETCH_RESTORE_JOURNAL";

/// Bytes of parts a restore's download holds at most at the default settings
/// ([`crate::storage::download::Limits`]): with the rest of the process, peak RSS stays
/// under 64 MiB whatever the backup's size.
pub const DOWNLOAD_MEMORY: u64 = 24 << 20;

/// Bytes per part when a restore fetches its partitions from remote storage in parallel
/// parts ([`crate::storage::download`]). `WALFETCH_RANGE_SIZE` (bytes) overrides it.
/// Measured through a capped link (docs/BENCHMARKS.md): within [`DOWNLOAD_MEMORY`],
/// smaller parts leave more of them requested ahead, which hides round trips better than
/// larger parts hide per-request overhead.
pub const RANGE_PART_SIZE: u64 = 1 << 20;

/// How long before the credentials in use expire `check` and `status` start to warn
/// (exit 19): an hour, time to renew a provider's token before a fetch fails.
/// `--credentials-margin` / `WALFETCH_CREDENTIALS_MARGIN` override it.
pub const CREDENTIALS_MARGIN: Duration = Duration::from_secs(3600);
