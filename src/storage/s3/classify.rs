//! S3's answers as walfetch's error kinds: what a failed request was (only a GET can
//! prove an object absent, and only with S3's own `NoSuchKey`), which answers are
//! credentials, access policy, a wrong bucket or region, or a transient fault.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::Remote;
use crate::error::{Error, ErrorKind};

/// What a request was, for classifying its failure: only a GET can prove an object
/// absent, and only with S3's own `NoSuchKey` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Head,
    List,
    Put,
}

/// Turns an SDK error into a classified walfetch error naming `what`.
pub(crate) fn classify<E>(remote: &Remote, op: Op, what: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            let message = service.err().message().unwrap_or("");
            let status = service.raw().status().as_u16();
            tracing::debug!(what, status, code, "storage answered with an error");
            classify_status(remote, op, what, status, code, message)
        }
        SdkError::TimeoutError(_) => Error::new(ErrorKind::Unreachable, format!("{what}: request timed out")),
        SdkError::DispatchFailure(failure) => {
            if let Some(creds) = credentials_error(err) {
                return Error::new(
                    ErrorKind::Credentials,
                    format!(
                        "{what}: no usable AWS credentials for bucket {} ({creds}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE with a credentials file, or an instance role",
                        remote.bucket
                    ),
                );
            }
            let cause = causes(err);
            if failure.is_io() || failure.is_timeout() {
                Error::connect_failure(format!("{what}: cannot connect to {} ({cause})", remote.endpoint))
            } else {
                Error::new(ErrorKind::Config, format!("{what}: the request could not be sent ({cause})"))
            }
        }
        SdkError::ResponseError(_) => Error::new(
            ErrorKind::Unreachable,
            format!(
                "{what}: {} answered with something other than S3 ({}); check the endpoint",
                remote.endpoint,
                causes(err)
            ),
        ),
        _ => match credentials_error(err) {
            Some(creds) => Error::new(ErrorKind::Credentials, format!("{what}: {creds}")),
            None => Error::new(ErrorKind::Config, format!("{what}: {}", causes(err))),
        },
    }
}

/// The message of a credentials failure somewhere in `err`'s causes, on one line.
fn credentials_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(creds) = e.downcast_ref::<CredentialsError>() {
            return Some(match creds {
                CredentialsError::CredentialsNotLoaded(_) => {
                    "none found: not in the environment, a profile, web identity or instance metadata".to_string()
                }
                other => causes(other),
            });
        }
        current = e.source();
    }
    None
}

/// `err` and its causes by their `Display` (never `Debug`), the last two distinct
/// ones, on one line: "tcp connect error: Connection refused (os error 111)".
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut all: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !all.iter().any(|a| a.contains(&text)) {
            all.push(text);
        }
        current = e.source();
    }
    let start = all.len().saturating_sub(2);
    all[start..].join(": ")
}

/// The answers an access policy written by someone else gives, each said for what it is
/// (all credentials errors: never "absent"):
/// - an object encrypted with a KMS key this identity may not use: S3 answers 403
///   AccessDenied with KMS's message;
/// - a GET or HEAD answered 403 AccessDenied: without `s3:ListBucket`, that is also how
///   S3 answers for an object that does not exist, so the message names both;
/// - a listing answered 403 AccessDenied: the policy lacks `s3:ListBucket`.
fn access_shape(remote: &Remote, op: Op, what: &str, status: u16, code: &str, message: &str) -> Option<Error> {
    let bucket = &remote.bucket;
    let kms = ["kms:", "KMS", "customer master key", "ciphertext refers to"]
        .iter()
        .any(|m| message.contains(m))
        || code.starts_with("KMS.");
    let denied = status == 403 && matches!(code, "AccessDenied" | "" | "Forbidden");
    if kms && (status == 403 || code.starts_with("KMS.")) {
        return Some(Error::new(
            ErrorKind::Credentials,
            format!(
                "{what}: the object is encrypted with a KMS key these credentials may not use ({code}: {message}); ask the bucket's owner for kms:Decrypt on that key (s3:GetObject alone does not read SSE-KMS objects)"
            ),
        ));
    }
    if !denied {
        return None;
    }
    Some(Error::new(
        ErrorKind::Credentials,
        match op {
            Op::List => format!(
                "{what}: access denied to listing bucket {bucket} (HTTP 403): the credentials work but the policy lacks s3:ListBucket (for this prefix); ask for it: walfetch lists to find backups and WAL, and without it S3 answers 403 for objects that do not exist"
            ),
            Op::Get | Op::Head => format!(
                "{what}: access denied (HTTP 403 {}): either these credentials may not read it (s3:GetObject), or the object does not exist and the policy lacks s3:ListBucket (then S3 answers 403 for a missing object, not 404); walfetch cannot tell which, so it is never taken for absent: run `walfetch check`, which tests the list permission",
                if code.is_empty() { "Forbidden" } else { code }
            ),
            Op::Put => format!(
                "{what}: access denied writing to bucket {bucket} (HTTP 403): the policy lacks s3:PutObject for this prefix"
            ),
        },
    ))
}

/// The classification rules, separated from the SDK types so they can be unit-tested.
fn classify_status(remote: &Remote, op: Op, what: &str, status: u16, code: &str, message: &str) -> Error {
    let bucket = &remote.bucket;
    let detail = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    match (op, status, code) {
        // S3 says NoSuchKey in the body of a GET's 404; only that proves absence.
        (Op::Get, 404, "NoSuchKey") => return Error::new(ErrorKind::NotFound, format!("{what}: no such object")),
        // A HEAD answer has no body: any 404 reads "NotFound". Trusted only by writers
        // deciding whether to upload, never to call an object absent to a reader.
        (Op::Head, 404, _) => return Error::new(ErrorKind::NotFound, format!("{what}: no such object")),
        _ => {}
    }
    if let Some(e) = access_shape(remote, op, what, status, code, message) {
        return e;
    }
    match code {
        "NoSuchBucket" => {
            return Error::new(
                ErrorKind::Config,
                format!("{what}: bucket {bucket} does not exist; check the prefix"),
            )
        }
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "TokenRefreshRequired"
        | "InvalidToken"
        | "AccessDenied"
        | "AllAccessDisabled"
        | "AccountProblem" => {
            return Error::new(
                ErrorKind::Credentials,
                format!("{what}: credentials rejected by bucket {bucket} ({detail}); check the access key, secret and session token"),
            )
        }
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            return Error::new(
                ErrorKind::Config,
                format!("{what}: bucket {bucket} is in another region ({detail}); set AWS_REGION or --region"),
            )
        }
        "SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout" | "InternalError" | "ServiceUnavailable" => {
            return Error::new(ErrorKind::Unreachable, format!("{what}: storage busy ({detail}, HTTP {status})"))
        }
        _ => {}
    }
    match status {
        // A 404 without S3's NoSuchKey: no S3 said it (a proxy, a load balancer, a wrong
        // host or path answered), so nothing is known about the object.
        404 => Error::new(
            ErrorKind::Unreachable,
            format!(
                "{what}: {} answered 404 without an S3 error code ({}), so the object's absence is not proven: something other than S3 answered (a proxy, a gateway, a wrong endpoint); check the endpoint",
                remote.endpoint,
                if code.is_empty() || code == "NotFound" { "no NoSuchKey" } else { code }
            ),
        ),
        401 | 403 => Error::new(
            ErrorKind::Credentials,
            format!(
                "{what}: credentials rejected by bucket {bucket} (HTTP {status} {detail}); check the access key, secret and session token"
            ),
        ),
        301 => Error::new(
            ErrorKind::Config,
            format!("{what}: bucket {bucket} answered with a redirect; set AWS_REGION, or --path-style for S3-compatible servers"),
        ),
        408 | 429 | 500..=599 => Error::new(ErrorKind::Unreachable, format!("{what}: storage error HTTP {status} {detail}")),
        412 => Error::new(ErrorKind::Corrupt, format!("{what}: object changed while it was being read")),
        _ => Error::new(
            ErrorKind::Config,
            format!("{what}: storage refused the request (HTTP {status} {detail})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::settings::S3Options;

    fn remote(bucket: &str) -> Remote {
        Remote {
            bucket: bucket.into(),
            endpoint: "http://127.0.0.1:9000".into(),
            options: S3Options::default(),
        }
    }

    #[test]
    fn classifies_service_answers() {
        let r = remote("b");
        let k = |status, code| classify_status(&r, Op::Get, "s3://b/k", status, code, "").kind();
        assert_eq!(k(404, "NoSuchKey"), ErrorKind::NotFound);
        assert_eq!(k(404, "NoSuchBucket"), ErrorKind::Config);
        assert_eq!(k(403, "SignatureDoesNotMatch"), ErrorKind::Credentials);
        assert_eq!(k(400, "ExpiredToken"), ErrorKind::Credentials);
        assert_eq!(k(403, ""), ErrorKind::Credentials);
        assert_eq!(k(503, "SlowDown"), ErrorKind::Unreachable);
        assert_eq!(k(500, ""), ErrorKind::Unreachable);
        assert_eq!(k(301, "PermanentRedirect"), ErrorKind::Config);
    }

    #[test]
    fn only_nosuchkey_on_a_get_proves_absence() {
        let r = remote("b");
        // What the SDK reports for a 404 with an empty body ("NotFound") or an HTML one ("").
        for code in ["", "NotFound", "NoSuchUpload"] {
            for op in [Op::Get, Op::List, Op::Put] {
                let e = classify_status(&r, op, "s3://b/k", 404, code, "");
                assert_eq!(e.kind(), ErrorKind::Unreachable, "{op:?} {code:?}");
                assert!(
                    e.message().contains("absence is not proven") && e.message().contains("127.0.0.1:9000"),
                    "{e}"
                );
            }
        }
        assert_eq!(
            classify_status(&r, Op::List, "l", 404, "NoSuchKey", "").kind(),
            ErrorKind::Unreachable
        );
        assert_eq!(classify_status(&r, Op::Head, "h", 404, "NotFound", "").kind(), ErrorKind::NotFound);
    }

    #[test]
    fn access_shapes_are_named() {
        let r = remote("b");
        let kms = classify_status(
            &r,
            Op::Get,
            "s3://b/k",
            403,
            "AccessDenied",
            "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.",
        );
        assert_eq!(kms.kind(), ErrorKind::Credentials);
        assert!(kms.message().contains("kms:Decrypt"), "{kms}");
        let list = classify_status(&r, Op::List, "s3://b/wal_005/", 403, "AccessDenied", "Access Denied");
        assert!(list.message().contains("lacks s3:ListBucket"), "{list}");
        for op in [Op::Get, Op::Head] {
            let get = classify_status(&r, op, "s3://b/k", 403, if op == Op::Head { "" } else { "AccessDenied" }, "");
            assert_eq!(get.kind(), ErrorKind::Credentials);
            assert!(get.message().contains("does not exist and the policy lacks s3:ListBucket"), "{get}");
        }
        // Bad credentials keep their own message.
        let bad = classify_status(&r, Op::Get, "s3://b/k", 403, "InvalidAccessKeyId", "");
        assert!(bad.message().contains("check the access key"), "{bad}");
    }

    #[test]
    fn credential_messages_name_the_bucket() {
        let e = classify_status(
            &remote("mybucket"),
            Op::Get,
            "s3://mybucket/k",
            403,
            "InvalidAccessKeyId",
            "bad key",
        );
        assert!(e.message().contains("mybucket"));
        assert!(e.message().contains("credentials rejected"));
    }
}
