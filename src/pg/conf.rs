//! Reading a data directory's configuration as PostgreSQL does, without a running
//! server: settings from `postgresql.auto.conf`, `postgresql.conf` and `recovery.conf`,
//! whether the server will start as a standby, in archive recovery or as a primary, and
//! what its `restore_command` runs.
//!
//! A `restore_command` is often a wrapper around the tool: `env -i VAR=… walfetch …`,
//! `envdir /etc/wal.d walfetch …` (WAL-E's documented form), `timeout 60 …`, `nice …`,
//! `sudo -u … …`, `runuser -u … -- …`, `sh -c '…'`. [`RestoreCommand::parse`] sees
//! through them to the walfetch call and the environment it gets.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::datadir::PgMajor;
use crate::config::StorageFlags;

/// The last value of `name` in a PostgreSQL configuration file's text
/// (`name = 'value'`, `name value`; `''` inside quotes is a quote; `#` starts a comment).
pub fn setting(text: &str, name: &str) -> Option<String> {
    let mut value = None;
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line
            .get(..name.len())
            .filter(|head| head.eq_ignore_ascii_case(name))
            .map(|_| &line[name.len()..])
        else {
            continue;
        };
        if !rest.starts_with(|c: char| c == '=' || c.is_whitespace()) {
            continue;
        }
        let rest = rest.trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut out = String::new();
            let mut chars = quoted.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        out.push('\'');
                        chars.next();
                        continue;
                    }
                    break;
                }
                out.push(c);
            }
            value = Some(out);
        } else {
            value = Some(rest.split('#').next().unwrap_or("").trim().to_string());
        }
    }
    value
}

/// A boolean setting as PostgreSQL reads it (`on`, `true`, `yes`, `1`, and prefixes).
pub fn is_true(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    !v.is_empty() && (["on", "true", "yes", "1"].contains(&v.as_str()) || "true".starts_with(&v) || "yes".starts_with(&v))
}

/// How a data directory will come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryState {
    /// A standby: replays archived WAL until promoted; a failed restore_command is retried.
    Standby,
    /// Archive recovery: replays what the archive has, then promotes; a restore_command
    /// exit below 126 ends recovery there.
    Recovery,
    /// No recovery configured: PostgreSQL starts as a primary.
    None,
}

impl RecoveryState {
    /// `standby`, `recovery` or `none`.
    pub fn label(self) -> &'static str {
        match self {
            RecoveryState::Standby => "standby",
            RecoveryState::Recovery => "recovery",
            RecoveryState::None => "none",
        }
    }
}

fn read(datadir: &Path, file: &str) -> String {
    fs::read_to_string(datadir.join(file)).unwrap_or_default()
}

/// How `datadir` will come up, from its signal files (12 and later) or `recovery.conf`
/// (before 12; `version` `None` when unknown: either form is accepted).
pub fn recovery_state(datadir: &Path, version: Option<PgMajor>) -> RecoveryState {
    let signals = version.is_none_or(|v| v.uses_signal_files());
    let conf = version.is_none_or(|v| !v.uses_signal_files());
    let recovery_conf = datadir.join("recovery.conf");
    if signals && datadir.join("standby.signal").exists() {
        return RecoveryState::Standby;
    }
    if conf && recovery_conf.exists() {
        let standby = setting(&read(datadir, "recovery.conf"), "standby_mode").is_some_and(|v| is_true(&v));
        return if standby { RecoveryState::Standby } else { RecoveryState::Recovery };
    }
    if signals && datadir.join("recovery.signal").exists() {
        return RecoveryState::Recovery;
    }
    RecoveryState::None
}

/// The `restore_command` configured for `datadir`, if any (empty counts as none).
pub fn restore_command(datadir: &Path, version: PgMajor) -> Option<String> {
    if version.uses_signal_files() {
        setting(&read(datadir, "postgresql.auto.conf"), "restore_command")
            .or_else(|| setting(&read(datadir, "postgresql.conf"), "restore_command"))
    } else {
        setting(&read(datadir, "recovery.conf"), "restore_command")
    }
    .filter(|c| !c.trim().is_empty())
}

/// The recovery target the data directory configures (`recovery_target_time = '…'`,
/// `_lsn`, `_xid`, `_name`, or `recovery_target = 'immediate'`), as `name = value`.
pub fn recovery_target(datadir: &Path, version: PgMajor) -> Option<String> {
    let files: &[&str] = if version.uses_signal_files() {
        &["postgresql.auto.conf", "postgresql.conf"]
    } else {
        &["recovery.conf"]
    };
    for file in files {
        let text = read(datadir, file);
        for name in [
            "recovery_target_time",
            "recovery_target_lsn",
            "recovery_target_xid",
            "recovery_target_name",
            "recovery_target",
        ] {
            if let Some(v) = setting(&text, name).filter(|v| !v.trim().is_empty()) {
                return Some(format!("{name} = '{v}'"));
            }
        }
    }
    None
}

/// Splits a shell command line into words (single and double quotes, backslashes).
pub fn shell_words(cmd: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.extend(chars.next()),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Whether a variable's value is a secret (a key, a token, a password).
fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["SECRET", "TOKEN", "PASSWORD", "PASSPHRASE", "_KEY"].iter().any(|p| n.contains(p))
        && !n.ends_with("_KEY_ID")
        && !n.ends_with("_KEY_PATH")
}

/// `cmd` with the values of secret variable assignments (`AWS_SECRET_ACCESS_KEY=…`,
/// `AWS_SESSION_TOKEN=…`) replaced by `***`, for reports and messages. A value runs to
/// the next blank outside quotes, as the shell reads it.
pub fn redact(cmd: &str) -> String {
    let mut out = String::with_capacity(cmd.len());
    let mut rest = cmd;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq);
        let name_start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        out.push_str(head);
        out.push('=');
        let tail = &tail[1..];
        if is_secret(&head[name_start..]) {
            out.push_str("***");
            rest = &tail[shell_word_end(tail)..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Where the shell word at the start of `text` ends: the first blank outside quotes
/// (single quotes take everything; in double quotes and outside, a backslash escapes).
fn shell_word_end(text: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => {
                chars.next();
            }
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => return i,
            (None, _) => {}
        }
    }
    text.len()
}

/// What a `restore_command` that calls `walfetch wal-fetch` runs it with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreCommand {
    /// The walfetch program as written (a path or a name looked up in `PATH`).
    pub program: String,
    /// Storage flags on the walfetch command line.
    pub flags: StorageFlags,
    /// Variables the wrappers set (`VAR=value`, `env VAR=value`, `sudo VAR=value`), in order.
    pub assignments: Vec<(String, String)>,
    /// `envdir` directories whose files become variables, in order.
    pub env_dirs: Vec<PathBuf>,
    /// `env -i`: walfetch sees no variable of the server's environment.
    pub clears_env: bool,
    /// The wrappers in front of walfetch, outermost first (`env`, `timeout`, …).
    pub wrappers: Vec<String>,
}

/// Where reading a command line goes after a wrapper.
enum Step {
    /// The wrapped command starts at this word.
    Next(usize),
    /// The wrapped command is this one word (`sh -c '…'`).
    Nested(String),
}

/// A variable assignment word (`NAME=value`).
fn assignment(word: &str) -> Option<(String, String)> {
    let (name, value) = word.split_once('=')?;
    let valid =
        !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then(|| (name.to_string(), value.to_string()))
}

/// Skips a wrapper's options: `takes_value` names the options followed by a value word
/// (`-u USER`); `--` ends the options. Returns the index of the first other word.
fn skip_options(words: &[String], mut i: usize, with_value: &[&str]) -> usize {
    while let Some(w) = words.get(i) {
        if w == "--" {
            return i + 1;
        }
        if !w.starts_with('-') || w == "-" {
            return i;
        }
        i += if takes_value(w, with_value) { 2 } else { 1 };
    }
    i
}

/// Whether option word `w` is followed by its value: `-u`, or a cluster ending in it
/// (`-Eu`); `--user=x` carries its own.
fn takes_value(w: &str, options: &[&str]) -> bool {
    if options.contains(&w) {
        return true;
    }
    !w.starts_with("--") && w.len() > 2 && w.chars().last().is_some_and(|c| options.contains(&format!("-{c}").as_str()))
}

/// Whether `w` is a short option cluster that includes `-c` (`-c`, `-lc`, `-ec`).
fn has_command_flag(w: &str) -> bool {
    w.starts_with('-') && !w.starts_with("--") && w.ends_with('c')
}

impl RestoreCommand {
    /// The walfetch call in `cmd`, seen through the usual wrappers; `None` when `cmd` does
    /// not run `walfetch wal-fetch` (or hides it, as a script does).
    pub fn parse(cmd: &str) -> Option<RestoreCommand> {
        let mut found = RestoreCommand::default();
        found.read_words(&shell_words(cmd), 0)?;
        Some(found)
    }

    fn read_words(&mut self, words: &[String], depth: usize) -> Option<()> {
        let mut i = 0;
        while let Some(word) = words.get(i) {
            if let Some(pair) = assignment(word) {
                self.assignments.push(pair);
                i += 1;
                continue;
            }
            let base = word.rsplit('/').next().unwrap_or(word);
            if base.starts_with("walfetch") {
                self.program = word.clone();
                return self.read_walfetch_args(&words[i + 1..]);
            }
            i = match self.wrapper(base, words, i + 1)? {
                Step::Next(next) => next,
                Step::Nested(command) => return self.read_nested(&command, depth),
            };
        }
        None
    }

    /// Reads the options of wrapper `base`, whose words start at `i`: where the command
    /// it runs starts, or that command as one word. `None` for anything else.
    fn wrapper(&mut self, base: &str, words: &[String], i: usize) -> Option<Step> {
        if !matches!(base, "exec" | "command" | "nohup") {
            self.wrappers.push(base.into());
        }
        let next = match base {
            "exec" | "command" | "nohup" => i,
            "env" => return self.env_options(words, i),
            "envdir" => {
                self.env_dirs.push(PathBuf::from(words.get(i)?));
                i + 1
            }
            "chpst" => self.chpst_options(words, i)?,
            "timeout" => skip_options(words, i, &["-s", "--signal", "-k", "--kill-after"]) + 1,
            "nice" | "ionice" | "setsid" | "stdbuf" => {
                skip_options(words, i, &["-n", "--adjustment", "-c", "--class", "-p", "--pid", "-i", "-o", "-e"])
            }
            "taskset" => {
                // `taskset MASK cmd`, or `taskset -c LIST cmd` (the option takes the list).
                let with_list = words.get(i).is_some_and(|w| w.starts_with('-'));
                skip_options(words, i, &["-c", "--cpu-list"]) + usize::from(!with_list)
            }
            "sudo" | "runuser" | "su" | "doas" | "setpriv" => return self.user_switch(base, words, i),
            "sh" | "bash" | "dash" | "zsh" => {
                let c = words[i..].iter().position(|w| has_command_flag(w))?;
                return Some(Step::Nested(words.get(i + c + 1)?.clone()));
            }
            _ => return None,
        };
        Some(Step::Next(next))
    }

    /// `env [-i] [-u NAME] [VAR=value…] cmd`, or `env -S 'cmd …'`.
    fn env_options(&mut self, words: &[String], mut i: usize) -> Option<Step> {
        while let Some(w) = words.get(i) {
            match w.as_str() {
                "-S" | "--split-string" => return Some(Step::Nested(words.get(i + 1)?.clone())),
                "-i" | "--ignore-environment" | "-" => self.clears_env = true,
                "-u" | "--unset" | "-C" | "--chdir" => i += 1,
                "--" => {}
                w if w.starts_with('-') => {}
                w => match assignment(w) {
                    Some(pair) => self.assignments.push(pair),
                    None => break,
                },
            }
            i += 1;
        }
        Some(Step::Next(i))
    }

    /// runit's `chpst [-e DIR] [-u USER] … cmd`.
    fn chpst_options(&mut self, words: &[String], mut i: usize) -> Option<usize> {
        const WITH_VALUE: [&str; 15] = [
            "-e", "-u", "-U", "-n", "-l", "-L", "-m", "-d", "-o", "-p", "-f", "-c", "-r", "-t", "-/",
        ];
        while let Some(w) = words.get(i).filter(|w| w.starts_with('-')) {
            if w == "-e" {
                self.env_dirs.push(PathBuf::from(words.get(i + 1)?));
            }
            i += if WITH_VALUE.contains(&w.as_str()) { 2 } else { 1 };
        }
        Some(i)
    }

    /// `sudo`/`runuser`/`su`/`doas`/`setpriv`, with the command as words or as one word
    /// after `-c` (`su postgres -c '…'`, `runuser -l postgres -c '…'`).
    fn user_switch(&mut self, base: &str, words: &[String], i: usize) -> Option<Step> {
        if let Some(c) = words[i..].iter().position(|w| has_command_flag(w) || w == "--command") {
            return Some(Step::Nested(words.get(i + c + 1)?.clone()));
        }
        let options = [
            "-u", "--user", "-g", "--group", "-C", "-D", "-h", "-p", "-U", "-T", "-s", "--shell", "-r", "-t",
        ];
        let mut i = skip_options(words, i, &options);
        if base == "sudo" {
            while let Some(pair) = words.get(i).and_then(|w| assignment(w)) {
                self.assignments.push(pair);
                i += 1;
            }
        }
        Some(Step::Next(i))
    }

    /// Reads a command given as one word (`sh -c '…'`), a few levels deep at most.
    fn read_nested(&mut self, command: &str, depth: usize) -> Option<()> {
        if depth >= 4 {
            return None;
        }
        self.read_words(&shell_words(command), depth + 1)
    }

    /// Reads walfetch's own arguments; requires the `wal-fetch` subcommand.
    fn read_walfetch_args(&mut self, args: &[String]) -> Option<()> {
        let mut it = args.iter();
        let mut wal_fetch = false;
        while let Some(w) = it.next() {
            let (flag, inline) = match w.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (w.as_str(), None),
            };
            let mut value = || inline.clone().or_else(|| it.next().cloned());
            match flag {
                "--prefix" => self.flags.prefix = value(),
                "--endpoint" => self.flags.endpoint = value(),
                "--region" => self.flags.region = value(),
                "--path-style" => self.flags.path_style = true,
                "--format" => self.flags.format = value(),
                "--stanza" => self.flags.stanza = value(),
                "--pgbackrest-config" => self.flags.pgbackrest_config = value().map(PathBuf::from),
                "wal-fetch" => wal_fetch = true,
                _ => {}
            }
        }
        wal_fetch.then_some(())
    }

    /// The variables walfetch would see besides the server's environment, as far as this
    /// process can read them: the `envdir` files (first line of each, as envdir reads
    /// them), then the assignments. Unreadable directories are named in the second list.
    pub fn environment(&self) -> (BTreeMap<String, String>, Vec<PathBuf>) {
        let mut vars = BTreeMap::new();
        let mut unreadable = Vec::new();
        for dir in &self.env_dirs {
            let Ok(entries) = fs::read_dir(dir) else {
                unreadable.push(dir.clone());
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || name.contains('=') {
                    continue;
                }
                match fs::read(entry.path()) {
                    // envdir: an empty file removes the variable; otherwise the first line,
                    // trailing blanks dropped, NULs as newlines.
                    Ok(bytes) if bytes.is_empty() => {
                        vars.remove(&name);
                    }
                    Ok(bytes) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let first = text.lines().next().unwrap_or("").trim_end().replace('\0', "\n");
                        vars.insert(name, first);
                    }
                    Err(_) => unreadable.push(entry.path()),
                }
            }
        }
        vars.extend(self.assignments.iter().cloned());
        (vars, unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_like_postgresql() {
        let text = "restore_command = 'old'\n# restore_command = 'commented'\nrestore_command='/usr/bin/walfetch --prefix s3://b/it''s wal-fetch \"%f\" \"%p\"'\nport = 5433 # comment\n";
        assert_eq!(
            setting(text, "restore_command").unwrap(),
            "/usr/bin/walfetch --prefix s3://b/it's wal-fetch \"%f\" \"%p\""
        );
        assert_eq!(setting(text, "port").unwrap(), "5433");
        assert_eq!(setting(text, "archive_mode"), None);
        assert_eq!(setting("restore_command_x = 'no'\n", "restore_command"), None);
        assert_eq!(setting("Standby_Mode = on\n", "standby_mode").as_deref(), Some("on"));
        assert!(is_true("on") && is_true("1") && is_true("TRUE") && is_true("y") && !is_true("off") && !is_true(""));
    }

    #[test]
    fn finds_walfetch_storage_flags() {
        assert!(RestoreCommand::parse("'/opt/walfetch dir/other-tool' --prefix s3://b/p wal-fetch \"%f\" \"%p\"").is_none());
        let c = RestoreCommand::parse("'/opt/wal fetch/walfetch' --prefix s3://b/p wal-fetch \"%f\" \"%p\"").unwrap();
        assert_eq!(c.flags.prefix.as_deref(), Some("s3://b/p"));
        let c =
            RestoreCommand::parse("/usr/local/bin/walfetch --prefix=s3://b/p --endpoint http://h:1 --path-style wal-fetch \"%f\" \"%p\"")
                .unwrap();
        assert_eq!(c.flags.prefix.as_deref(), Some("s3://b/p"));
        assert_eq!(c.flags.endpoint.as_deref(), Some("http://h:1"));
        assert!(c.flags.path_style);
        assert!(RestoreCommand::parse("wal-g wal-fetch %f %p").is_none());
        assert!(RestoreCommand::parse("walfetch wal-push %p").is_none());
        assert!(RestoreCommand::parse("/usr/local/bin/restore.sh %f %p").is_none());
        assert_eq!(shell_words(r#"a 'b c' "d\"e" f\ g"#), ["a", "b c", "d\"e", "f g"]);
    }

    #[test]
    fn sees_through_wrappers() {
        let cases = [
            (
                "/usr/bin/env -i WALG_S3_PREFIX=s3://b/p AWS_REGION=eu-west-1 /usr/local/bin/walfetch wal-fetch \"%f\" \"%p\"",
                vec!["env"],
            ),
            ("envdir /etc/wal.d walfetch wal-fetch %f %p", vec!["envdir"]),
            ("timeout -k 5 60 walfetch --prefix s3://b/p wal-fetch %f %p", vec!["timeout"]),
            (
                "timeout --signal=KILL 60s walfetch --prefix s3://b/p wal-fetch %f %p",
                vec!["timeout"],
            ),
            ("nice -n 10 walfetch --prefix s3://b/p wal-fetch %f %p", vec!["nice"]),
            ("sudo -u postgres -E -- walfetch --prefix s3://b/p wal-fetch %f %p", vec!["sudo"]),
            ("runuser -u postgres -- walfetch --prefix s3://b/p wal-fetch %f %p", vec!["runuser"]),
            ("exec /opt/walfetch/bin/walfetch --prefix s3://b/p wal-fetch %f %p", vec![]),
            ("WALG_S3_PREFIX=s3://b/p walfetch wal-fetch %f %p", vec![]),
            (
                "/usr/bin/timeout 60 /usr/bin/envdir /etc/wal.d /usr/bin/nice walfetch wal-fetch %f %p",
                vec!["timeout", "envdir", "nice"],
            ),
            ("sh -c 'envdir /etc/wal.d walfetch wal-fetch \"%f\" \"%p\"'", vec!["sh", "envdir"]),
            ("su postgres -c 'walfetch --prefix s3://b/p wal-fetch %f %p'", vec!["su"]),
            ("taskset -c 0-3 walfetch --prefix s3://b/p wal-fetch %f %p", vec!["taskset"]),
            ("taskset 0x3 walfetch --prefix s3://b/p wal-fetch %f %p", vec!["taskset"]),
            ("sudo -Eu postgres walfetch --prefix s3://b/p wal-fetch %f %p", vec!["sudo"]),
            ("bash -lc 'walfetch --prefix s3://b/p wal-fetch %f %p'", vec!["bash"]),
            ("env -S 'walfetch --prefix s3://b/p wal-fetch %f %p'", vec!["env"]),
        ];
        for (cmd, wrappers) in &cases {
            let c = RestoreCommand::parse(cmd).unwrap_or_else(|| panic!("not recognised: {cmd}"));
            assert_eq!(&c.wrappers, wrappers, "{cmd}");
        }
        let c = RestoreCommand::parse(cases[0].0).unwrap();
        assert!(c.clears_env);
        assert_eq!(c.program, "/usr/local/bin/walfetch");
        assert_eq!(c.assignments[0], ("WALG_S3_PREFIX".to_string(), "s3://b/p".to_string()));
        let c = RestoreCommand::parse(cases[1].0).unwrap();
        assert_eq!(c.env_dirs, [PathBuf::from("/etc/wal.d")]);
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("env AWS_ACCESS_KEY_ID=AKIA AWS_SECRET_ACCESS_KEY=s3cr3t AWS_SESSION_TOKEN='t/k' WALG_LIBSODIUM_KEY=abc walfetch --prefix=s3://b wal-fetch %f %p"),
            "env AWS_ACCESS_KEY_ID=AKIA AWS_SECRET_ACCESS_KEY=*** AWS_SESSION_TOKEN=*** WALG_LIBSODIUM_KEY=*** walfetch --prefix=s3://b wal-fetch %f %p"
        );
        assert_eq!(redact("walfetch wal-fetch %f %p"), "walfetch wal-fetch %f %p");
        assert_eq!(redact("é=1 ÀTOKEN=x"), "é=1 ÀTOKEN=***");
        assert_eq!(redact(r#"AWS_SESSION_TOKEN="ab\"cd" x"#), "AWS_SESSION_TOKEN=*** x");
        assert_eq!(
            redact("AWS_SECRET_ACCESS_KEY=abc'def ghi'jk walfetch"),
            "AWS_SECRET_ACCESS_KEY=*** walfetch"
        );
    }

    #[test]
    fn envdir_files_become_variables() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("WALG_S3_PREFIX"), "s3://b/p\nignored\n").unwrap();
        fs::write(dir.path().join("AWS_REGION"), "eu-west-1  \n").unwrap();
        fs::write(dir.path().join(".hidden"), "x").unwrap();
        let cmd = format!("envdir {} env AWS_REGION=us-east-2 walfetch wal-fetch %f %p", dir.path().display());
        let (vars, unreadable) = RestoreCommand::parse(&cmd).unwrap().environment();
        assert!(unreadable.is_empty());
        assert_eq!(vars.get("WALG_S3_PREFIX").map(String::as_str), Some("s3://b/p"));
        assert_eq!(
            vars.get("AWS_REGION").map(String::as_str),
            Some("us-east-2"),
            "assignments come after envdir"
        );
        assert!(!vars.contains_key(".hidden"));
    }

    #[test]
    fn recovery_state_from_signal_files_or_recovery_conf() {
        let dir = tempfile::tempdir().unwrap();
        let v15 = Some(PgMajor { major: 15, minor: 0 });
        let v11 = Some(PgMajor { major: 11, minor: 0 });
        assert_eq!(recovery_state(dir.path(), v15), RecoveryState::None);
        fs::write(dir.path().join("recovery.conf"), "standby_mode = 'on'\n").unwrap();
        assert_eq!(recovery_state(dir.path(), v11), RecoveryState::Standby);
        assert_eq!(recovery_state(dir.path(), None), RecoveryState::Standby);
        assert_eq!(recovery_state(dir.path(), v15), RecoveryState::None, "ignored from 12 on");
        fs::write(dir.path().join("recovery.conf"), "# standby_mode = 'on'\n").unwrap();
        assert_eq!(recovery_state(dir.path(), v11), RecoveryState::Recovery);
        fs::write(dir.path().join("recovery.signal"), "").unwrap();
        assert_eq!(recovery_state(dir.path(), v15), RecoveryState::Recovery);
        fs::write(dir.path().join("standby.signal"), "").unwrap();
        assert_eq!(recovery_state(dir.path(), v15), RecoveryState::Standby);
    }
}
