//! pgBackRest repositories, read as natively as wal-g archives.
//!
//! ```text
//! <repo>/archive/<stanza>/archive.info (+ .copy)          PostgreSQL histories, WAL passphrase
//! <repo>/archive/<stanza>/<version>-<id>/<TLI>.history       (not compressed; encrypted with the repo)
//! <repo>/archive/<stanza>/<version>-<id>/<first 16 of name>/<segment>-<sha1>[.gz|.bz2|.lz4|.zst]
//! <repo>/backup/<stanza>/backup.info (+ .copy)             backups, histories, manifest passphrase
//! <repo>/backup/<stanza>/<label>/backup.manifest (+ .copy) every file, its SHA-1, where its bytes are
//! <repo>/backup/<stanza>/<label>/pg_data/<path>[.<ext>]     a file stored on its own
//! <repo>/backup/<stanza>/<label>/bundle/<id>                small files, concatenated
//! <repo>/backup/<stanza>/<label>/<name>.pgbi                a block-incremental file on its own
//! ```
//!
//! Labels: full `YYYYMMDD-HHMMSSF`, diff and incr `<full>_YYYYMMDD-HHMMSS{D,I}`. The SHA-1
//! in a WAL name is that of the uncompressed segment. Encryption (`aes-256-cbc`) is
//! applied after compression, with a chain of passphrases: the repository's opens the
//! info files, `backup.info`'s the manifests, a manifest's its backup set's files,
//! `archive.info`'s the WAL.

pub mod blockmap;
pub mod cipher;
pub mod info;
pub mod ini;
pub mod manifest;
