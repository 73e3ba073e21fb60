//! The production backends against real servers: S3 (`QUACKFS_TEST_S3_BUCKET` +
//! `AWS_ENDPOINT_URL`, credentials from the usual AWS variables) and PostgreSQL
//! (`QUACKFS_TEST_PG_URL`). `scripts/services.sh up` starts both and writes the variables.
//! Without them the tests are skipped, except under CI (`CI` set), where they fail.

use bytes::Bytes;
use quackfs::store::s3::{S3Options, S3Store};
use quackfs::store::{testsuite, DynStore, ObjectStore, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 8 random hex digits, unique per test run.
fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Whether the variables are set; otherwise skips (or fails under CI).
fn have_env(test: &str, vars: &[&str]) -> bool {
    let missing: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |s| s.is_empty()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI must set {missing:?} (scripts/services.sh up writes them)");
    }
    eprintln!(
        "skipping {test}: {missing:?} not set (source the env file of scripts/services.sh up)"
    );
    false
}

fn have_s3(test: &str) -> bool {
    have_env(test, &["QUACKFS_TEST_S3_BUCKET", "AWS_ENDPOINT_URL"])
}

fn bucket() -> String {
    std::env::var("QUACKFS_TEST_S3_BUCKET").unwrap()
}

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap()
}

/// A store under a fresh random prefix of the test bucket.
async fn s3_store(opts: S3Options) -> (S3Store, String) {
    let prefix = format!("quackfs-test-{}", tag());
    let url = format!("s3://{}/{prefix}", bucket());
    (S3Store::open_with(&url, opts).await.unwrap(), prefix)
}

/// The SDK client the tests use to look behind the store's back.
async fn raw_client() -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        ))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(endpoint())
        .force_path_style(true)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Multipart uploads still open under `prefix`.
async fn open_uploads(client: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket())
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_conformance() {
    if !have_s3("s3_conformance") {
        return;
    }
    let url = format!("s3://{}/quackfs-test-{}", bucket(), tag());
    let store = quackfs::engine::open_store(&url).await.unwrap();
    assert_eq!(store.describe(), url);
    let started = Instant::now();
    testsuite::conformance_suite(store.clone()).await;
    eprintln!(
        "s3 conformance suite (AWS_CA_BUNDLE={:?}): {:.2?}",
        std::env::var("AWS_CA_BUNDLE").ok(),
        started.elapsed()
    );
    assert!(store.list("").await.unwrap().is_empty());
}

/// The conformance suite again in a child process with `AWS_CA_BUNDLE` flipped (removed when set
/// here, set to the system bundle when not), so both configurations are covered.
#[test]
fn s3_conformance_with_ca_bundle_flipped() {
    if !have_s3("s3_conformance_with_ca_bundle_flipped") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "s3_conformance",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    let flipped = if std::env::var_os("AWS_CA_BUNDLE").is_some() {
        cmd.env_remove("AWS_CA_BUNDLE");
        "unset"
    } else {
        cmd.env("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt");
        "set"
    };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "conformance with AWS_CA_BUNDLE {flipped} failed:\n{stdout}\n{stderr}"
    );
    eprintln!("conformance with AWS_CA_BUNDLE {flipped}: ok");
}

fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (((i as u64 * 2_654_435_761) >> 13) as u8) ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_multipart_put_file() {
    if !have_s3("s3_multipart_put_file") {
        return;
    }
    const MIB: usize = 1024 * 1024;
    let (store, prefix) = s3_store(S3Options::from_env().unwrap()).await;
    let store: DynStore = Arc::new(store);
    let client = raw_client().await;
    let dir = tempfile::tempdir().unwrap();

    let data = patterned(70 * MIB + 123, 1);
    let path = dir.path().join("big");
    std::fs::write(&path, &data).unwrap();
    let started = Instant::now();
    store.put_file("layers/big", &path).await.unwrap();
    let upload_time = started.elapsed();
    assert!(!path.exists(), "put_file left the file behind");

    // Multipart: the ETag of a multipart object ends in -<parts> (16 MiB parts: 5).
    let head = client
        .head_object()
        .bucket(bucket())
        .key(format!("{prefix}/layers/big"))
        .send()
        .await
        .unwrap();
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    assert!(
        etag.ends_with("-5"),
        "not a 5-part multipart upload: ETag {etag}"
    );
    assert_eq!(head.content_length(), Some(data.len() as i64));

    let meta = store.head("layers/big").await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    let part = 16 * MIB;
    for (start, end) in [
        (0, 10),
        (part - 5, part + 5),
        (3 * part + 1000, 3 * part + 300_000),
        (data.len() - 7, data.len()),
        (data.len() - 7, data.len() + 100),
    ] {
        let got = store
            .get_range("layers/big", start as u64, end as u64)
            .await
            .unwrap();
        assert_eq!(
            &got[..],
            &data[start..end.min(data.len())],
            "{start}..{end}"
        );
    }
    assert!(store
        .get_range("layers/big", data.len() as u64, data.len() as u64 + 10)
        .await
        .unwrap()
        .is_empty());
    let started = Instant::now();
    let all = store.get("layers/big").await.unwrap();
    let download_time = started.elapsed();
    assert!(all == data, "whole object differs");
    drop(all);

    // Over an existing key: refused before uploading anything, file kept.
    let other = dir.path().join("other");
    std::fs::write(&other, patterned(65 * MIB, 2)).unwrap();
    match store.put_file("layers/big", &other).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, "layers/big"),
        r => panic!("expected AlreadyExists, got {r:?}"),
    }
    assert!(other.exists());

    // Two multipart uploads racing for one key: one wins (the loser keeps its file), or, on a
    // server whose conditional complete is not atomic, the object is one whole upload.
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let data_a = patterned(66 * MIB, 3);
    let data_b = patterned(67 * MIB, 4);
    std::fs::write(&a, &data_a).unwrap();
    std::fs::write(&b, &data_b).unwrap();
    let started = Instant::now();
    let (ra, rb) = tokio::join!(
        store.put_file("layers/race", &a),
        store.put_file("layers/race", &b)
    );
    let race_time = started.elapsed();
    let stored = store.get("layers/race").await.unwrap();
    match (&ra, &rb) {
        (Ok(()), Err(StoreError::AlreadyExists(_))) => {
            assert!(stored == data_a);
            assert!(!a.exists() && b.exists());
        }
        (Err(StoreError::AlreadyExists(_)), Ok(())) => {
            assert!(stored == data_b);
            assert!(a.exists() && !b.exists());
        }
        // SeaweedFS checks If-None-Match on CompleteMultipartUpload, but not atomically: two
        // completions racing within the same instant can both succeed. quackfs never races on a
        // key (layer keys are unique ids), so only demand that the object is one whole upload.
        (Ok(()), Ok(())) => {
            assert!(
                stored == data_a || stored == data_b,
                "a torn object after a lost race"
            );
            eprintln!(
                "note: both racing multipart completions succeeded (server race, not atomic)"
            );
        }
        _ => panic!("racing multipart uploads: expected one winner, got {ra:?} / {rb:?}"),
    }
    assert!(
        open_uploads(&client, &format!("{prefix}/"))
            .await
            .is_empty(),
        "multipart uploads left open"
    );
    eprintln!(
        "multipart: 70 MiB up {upload_time:.2?}, down {download_time:.2?}; race of 2 x ~66 MiB {race_time:.2?}"
    );

    for m in store.list("").await.unwrap() {
        store.delete(&m.key).await.unwrap();
    }
    assert!(store.list("").await.unwrap().is_empty());
}

/// More objects than one ListObjectsV2 page (1000) holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_list_paginates() {
    if !have_s3("s3_list_paginates") {
        return;
    }
    use futures::{StreamExt, TryStreamExt};
    let (store, prefix) = s3_store(S3Options::from_env().unwrap()).await;
    let n = 1234;
    let keys: Vec<String> = (0..n).map(|i| format!("many/{i:05}")).collect();
    let started = Instant::now();
    futures::stream::iter(keys.iter())
        .map(|k| store.put(k, Bytes::from(k.clone().into_bytes())))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let put_time = started.elapsed();
    store.put("other", Bytes::new()).await.unwrap();
    let started = Instant::now();
    let listed = store.list("many/").await.unwrap();
    let list_time = started.elapsed();
    let got: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(got, keys);
    assert!(listed.iter().all(|m| m.size == 10));
    let first_page = raw_client()
        .await
        .list_objects_v2()
        .bucket(bucket())
        .prefix(format!("{prefix}/many/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_page.is_truncated(),
        Some(true),
        "the server returned everything in one page: pagination untested"
    );
    assert_eq!(store.list("").await.unwrap().len(), n + 1);
    let store = &store;
    futures::stream::iter(store.list("").await.unwrap())
        .map(|m| async move { store.delete(&m.key).await })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    assert!(store.list("").await.unwrap().is_empty());
    eprintln!("{n} puts (64 at a time): {put_time:.2?}; list: {list_time:.2?}");
}

fn assert_backend(r: Result<impl std::fmt::Debug, StoreError>, needles: &[&str]) -> String {
    match r {
        Err(StoreError::Backend(msg)) => {
            for n in needles {
                assert!(msg.contains(n), "{msg:?} does not mention {n:?}");
            }
            msg
        }
        other => panic!("expected a Backend error mentioning {needles:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_are_clear_and_quick() {
    if !have_s3("s3_errors_are_clear_and_quick") {
        return;
    }
    let ep = endpoint();
    let data = Bytes::from_static(b"x");

    // Wrong secret, unknown key id.
    for (id, secret) in [
        (
            std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "quackfs".into()),
            "wrong-secret".to_string(),
        ),
        ("no-such-key-id".to_string(), "whatever".to_string()),
    ] {
        let opts = S3Options {
            credentials: Some(aws_sdk_s3::config::Credentials::new(
                id, secret, None, None, "test",
            )),
            ..S3Options::from_env().unwrap()
        };
        let (store, _) = s3_store(opts).await;
        let started = Instant::now();
        let msg = assert_backend(
            store.put("k", data.clone()).await,
            &["AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", &ep],
        );
        assert_backend(
            store.get("k").await,
            &["AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"],
        );
        assert_backend(
            store.list("").await,
            &["AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"],
        );
        assert_backend(store.check().await, &["AWS_ACCESS_KEY_ID"]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "credential errors took {:?}",
            started.elapsed()
        );
        eprintln!("bad credentials: {msg}");
    }

    // A bucket that does not exist.
    let missing = format!("quackfs-no-such-bucket-{}", tag());
    let store = S3Store::open_with(&format!("s3://{missing}/p"), S3Options::from_env().unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let want = format!("bucket {missing} does not exist at {ep}");
    assert_backend(store.get("k").await, &[&want]);
    assert_backend(store.get_range("k", 0, 5).await, &[&want]);
    assert_backend(store.list("").await, &[&want]);
    assert_backend(store.delete("k").await, &[&want]);
    assert_backend(store.check().await, &[&want]);
    // Writes check the bucket first (SeaweedFS would create it on PUT).
    let msg = assert_backend(store.put("k", data.clone()).await, &[&want]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"abc").unwrap();
    assert_backend(store.put_file("k", &file).await, &[&want]);
    assert!(file.exists(), "a failed put_file must keep the file");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "missing-bucket errors took {:?}",
        started.elapsed()
    );
    eprintln!("missing bucket: {msg}");

    // Nobody listening: retried for the retry timeout, then a clear error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("http://127.0.0.1:{port}");
    let opts = S3Options {
        endpoint_url: Some(dead.clone()),
        retry_timeout: Duration::from_secs(2),
        ..S3Options::from_env().unwrap()
    };
    let (store, _) = s3_store(opts).await;
    let started = Instant::now();
    let msg = assert_backend(store.put("k", data).await, &[&dead, &bucket(), "attempts"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(6),
        "unreachable endpoint: gave up after {took:?}"
    );
    eprintln!("unreachable endpoint ({took:.2?}): {msg}");
}

/// How the fake S3 endpoint answers one request: status, error code (XML body) or body.
#[derive(Clone)]
enum Answer {
    Ok(&'static [u8]),
    Error(u16, &'static str),
    /// Never answer.
    Hang,
    /// The object's bytes, the asked `Range` of them (206 with `Content-Range`); with `Some(n)`
    /// the connection is closed after `n` bytes of the body (its `Content-Length` says more).
    Range(&'static [u8], Option<usize>),
}

/// A fake S3 endpoint on loopback: HEAD requests succeed; the other requests of each method get
/// the scripted answers in order (the last one repeats). Returns the endpoint and the log of
/// request lines.
async fn fake_s3(
    script: Vec<(&'static str, Answer)>,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (log, script) = (log2.clone(), script.clone());
            tokio::spawn(async move {
                // One request per connection (answers say Connection: close).
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = head.lines().next().unwrap_or_default().to_string();
                let method = line.split(' ').next().unwrap_or_default().to_string();
                // "bytes=A-B" (B inclusive) or "bytes=A-".
                let range = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    let (a, b) = k
                        .eq_ignore_ascii_case("range")
                        .then(|| v.trim().strip_prefix("bytes=")?.split_once('-'))??;
                    Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()))
                });
                let answer = if method == "HEAD" {
                    Answer::Ok(b"")
                } else {
                    let mut log = log.lock().unwrap();
                    let seen = log.iter().filter(|l| l.starts_with(&method)).count();
                    log.push(match range {
                        Some((a, b)) => format!(
                            "{line} bytes={a}-{}",
                            b.map_or(String::new(), |b| b.to_string())
                        ),
                        None => line.clone(),
                    });
                    let mine: Vec<&Answer> = script
                        .iter()
                        .filter(|(m, _)| *m == method)
                        .map(|(_, a)| a)
                        .collect();
                    mine.get(seen)
                        .or(mine.last())
                        .map(|a| (*a).clone())
                        .unwrap_or(Answer::Error(501, "NotImplemented"))
                };
                let mut extra = String::new();
                let mut cut = None;
                let (status, body): (u16, Vec<u8>) = match answer {
                    Answer::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    Answer::Ok(b) => (200, b.to_vec()),
                    Answer::Range(b, after) => {
                        let (a, e) = match range {
                            Some((a, e)) => (a, e.map_or(b.len(), |e| e + 1).min(b.len())),
                            None => (0, b.len()),
                        };
                        extra = format!("Content-Range: bytes {a}-{}/{}\r\n", e - 1, b.len());
                        cut = after;
                        (206, b[a..e].to_vec())
                    }
                    Answer::Error(status, code) => (
                        status,
                        format!(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                             <Error><Code>{code}</Code><Message>fake {code}</Message></Error>"
                        )
                        .into_bytes(),
                    ),
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/xml\r\n\
                     ETag: \"abc\"\r\n{extra}Connection: close\r\n\r\n",
                    if method == "HEAD" { 0 } else { body.len() }
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                if method != "HEAD" {
                    let _ = sock
                        .write_all(&body[..cut.unwrap_or(body.len()).min(body.len())])
                        .await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    (endpoint, log)
}

async fn fake_store(endpoint: &str, retry_timeout: Duration) -> S3Store {
    let opts = S3Options {
        endpoint_url: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            "fake", "fake", None, None, "test",
        )),
        retry_timeout,
        ..S3Options::default()
    };
    S3Store::open_with("s3://fake-bucket/pre", opts)
        .await
        .unwrap()
}

/// Retries against a fake endpoint (runs without servers): throttling and 5xx are retried with
/// backoff, within the retry timeout; a create whose first answer was lost is recognised as ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_retries_against_fake_endpoint() {
    use Answer::*;
    let data = Bytes::from_static(b"x");

    // Throttled twice, then accepted.
    let (ep, log) = fake_s3(vec![
        ("PUT", Error(503, "SlowDown")),
        ("PUT", Error(500, "InternalError")),
        ("PUT", Ok(b"")),
    ])
    .await;
    let store = fake_store(&ep, Duration::from_secs(10)).await;
    store.put("k", data.clone()).await.unwrap();
    assert_eq!(log.lock().unwrap().len(), 3);
    assert!(log.lock().unwrap()[0].starts_with("PUT /fake-bucket/pre/k"));

    // The first attempt's answer is lost (503); the retry finds the object (412): it holds our
    // bytes, so the put succeeded; with other bytes, it is someone else's.
    for (stored, ok) in [(&b"x"[..], true), (&b"y"[..], false)] {
        let (ep, _) = fake_s3(vec![
            ("PUT", Error(503, "ServiceUnavailable")),
            ("PUT", Error(412, "PreconditionFailed")),
            ("GET", Ok(stored)),
        ])
        .await;
        let store = fake_store(&ep, Duration::from_secs(10)).await;
        match (store.put("k", data.clone()).await, ok) {
            (Result::Ok(()), true) | (Err(StoreError::AlreadyExists(_)), false) => {}
            (r, _) => panic!("stored {stored:?}: got {r:?}"),
        }
    }
    // A 412 on the first attempt is someone else's object, no questions asked.
    let (ep, log) = fake_s3(vec![("PUT", Error(412, "PreconditionFailed"))]).await;
    let store = fake_store(&ep, Duration::from_secs(10)).await;
    assert!(matches!(
        store.put("k", data.clone()).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(log.lock().unwrap().len(), 1);

    // Throttled for good: gives up after the retry timeout, naming endpoint and bucket.
    let (ep, log) = fake_s3(vec![("PUT", Error(503, "SlowDown"))]).await;
    let store = fake_store(&ep, Duration::from_secs(1)).await;
    let started = Instant::now();
    let msg = assert_backend(
        store.put("k", data.clone()).await,
        &[&ep, "fake-bucket", "SlowDown"],
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(log.lock().unwrap().len() >= 4, "few retries: {:?}", log);
    eprintln!("throttled ({took:.2?}): {msg}");

    // Permanent errors are not retried.
    let (ep, log) = fake_s3(vec![("GET", Error(403, "AccessDenied"))]).await;
    let store = fake_store(&ep, Duration::from_secs(10)).await;
    assert_backend(
        store.get("k").await,
        &["AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"],
    );
    assert_eq!(log.lock().unwrap().len(), 1);

    // A server that never answers: each attempt is cut off, the whole stays bounded.
    let (ep, _) = fake_s3(vec![("GET", Hang)]).await;
    let store = fake_store(&ep, Duration::from_secs(1)).await;
    let started = Instant::now();
    let msg = assert_backend(store.get_range("k", 0, 10).await, &[&ep, "fake-bucket"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("hanging server ({took:.2?}): {msg}");
}

/// `get_range_pieces` against a fake endpoint: a body cut off mid-way is asked for again from
/// the first piece not handed over (the pieces before it are not fetched twice), and a server
/// that ignores the range and sends the whole object still gives the right pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_pieces_resume_after_a_cut_body() {
    static DATA: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| patterned(1000, 7));
    let data: &'static [u8] = &DATA;
    let lens = [100u32, 200, 300, 350];
    let collect = |store: S3Store, start: u64| async move {
        let mut got = Vec::new();
        let r = store
            .get_range_pieces("k", start, &lens, &mut |i, b| got.push((i, b.to_vec())))
            .await;
        (r, got)
    };
    let expect = |start: usize| -> Vec<(usize, Vec<u8>)> {
        testsuite::expected_pieces(data, start, &lens)
            .into_iter()
            .map(|(i, b)| (i, b.to_vec()))
            .collect()
    };

    // Cut after 250 bytes: pieces 0 and 1 (300 bytes) are not all in; piece 0 is handed over,
    // the retry asks for the rest from byte 100 on.
    let (ep, log) = fake_s3(vec![
        ("GET", Answer::Range(data, Some(250))),
        ("GET", Answer::Range(data, None)),
    ])
    .await;
    let (r, got) = collect(fake_store(&ep, Duration::from_secs(10)).await, 0).await;
    r.unwrap();
    assert_eq!(got, expect(0));
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].ends_with("bytes=0-949"), "{log:?}");
    assert!(log[1].ends_with("bytes=100-949"), "{log:?}");

    // The object ends first (from 60 the last piece would end at 1010 of its 1000 bytes): the
    // pieces that fit are handed over, and that is success.
    let (ep, _) = fake_s3(vec![("GET", Answer::Range(data, None))]).await;
    let (r, got) = collect(fake_store(&ep, Duration::from_secs(10)).await, 60).await;
    r.unwrap();
    assert_eq!(got, expect(60));
    assert_eq!(got.len(), 3);

    // The range ignored: the whole object comes back; its head is skipped.
    let (ep, _) = fake_s3(vec![("GET", Answer::Ok(data))]).await;
    let (r, got) = collect(fake_store(&ep, Duration::from_secs(10)).await, 20).await;
    r.unwrap();
    assert_eq!(got, expect(20));

    // Cut off on every attempt: an error once the retry timeout has passed; what came stands.
    let (ep, _) = fake_s3(vec![("GET", Answer::Range(data, Some(150)))]).await;
    let (r, got) = collect(fake_store(&ep, Duration::from_secs(1)).await, 0).await;
    assert_backend(r, &[&ep, "fake-bucket", "body"]);
    assert_eq!(got, expect(0)[..1].to_vec(), "piece 1 never comes whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_catalog_suite() {
    if !have_env("pg_catalog_suite", &["QUACKFS_TEST_PG_URL"]) {
        return;
    }
    let url = std::env::var("QUACKFS_TEST_PG_URL").unwrap();
    let cat = quackfs::catalog::open(&url).await.unwrap();
    let started = Instant::now();
    quackfs::catalog::testsuite::run(cat.clone(), &tag()).await;
    quackfs::catalog::testsuite::syncs_and_checkpoint_commits(cat.clone(), &tag()).await;
    quackfs::catalog::testsuite::concurrent_commits(cat.clone(), &tag()).await;
    quackfs::catalog::testsuite::layer_updates_in_any_order(cat.clone(), &tag()).await;
    quackfs::catalog::testsuite::session_layers(cat.clone(), &tag()).await;
    quackfs::catalog::testsuite::follower_moves(cat.clone(), &tag()).await;
    eprintln!("catalog suite on PostgreSQL: {:.2?}", started.elapsed());
}

/// A TLS front for the test S3 server: a private CA, a certificate for 127.0.0.1 signed by it,
/// and a small Python proxy that terminates TLS and forwards to the plain-HTTP endpoint.
/// The proxy is killed on drop.
struct TlsFront {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl TlsFront {
    fn start() -> TlsFront {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl (scripts/install-deps.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=quackfs test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let upstream = endpoint();
        let upstream = upstream
            .strip_prefix("http://")
            .expect("the test S3 endpoint is plain http");
        let (host, port) = upstream.trim_end_matches('/').rsplit_once(':').unwrap();
        const PROXY: &str = r#"
import socket, ssl, sys, threading
cert, key, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass
def serve(conn):
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError):
        conn.close()
        return
    up = socket.create_connection((host, port))
    threading.Thread(target=pump, args=(up, tls), daemon=True).start()
    pump(tls, up)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", PROXY])
            .arg(d.join("srv.pem"))
            .arg(d.join("srv.key"))
            .args([host, port])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the TLS proxy (python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("TLS proxy did not print its port: {line:?}")
        });
        TlsFront { dir, child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An https endpoint behind a private CA: trusted through `AWS_CA_BUNDLE` (the whole conformance
/// suite runs through it, in a child process with the variables set), refused without it with
/// an error that says why, quickly (a certificate problem is not retried), and a bundle that
/// does not exist is a clear configuration error.
#[test]
fn s3_over_tls_trusts_aws_ca_bundle() {
    if !have_s3("s3_over_tls_trusts_aws_ca_bundle") {
        return;
    }
    let front = TlsFront::start();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "s3_conformance",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AWS_ENDPOINT_URL", front.url())
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env("AWS_CA_BUNDLE", front.ca())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "conformance over TLS with AWS_CA_BUNDLE failed:\n{stdout}\n{stderr}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("s3://{}/quackfs-test-{}", bucket(), tag());
        let opts = S3Options {
            endpoint_url: Some(front.url()),
            ca_bundle: None,
            ..S3Options::default()
        };
        let store = S3Store::open_with(&url, opts.clone()).await.unwrap();
        let started = Instant::now();
        let err = store.list("").await.expect_err("an untrusted certificate");
        let text = err.to_string();
        eprintln!(
            "without the bundle: {text} (after {:.2?})",
            started.elapsed()
        );
        assert!(
            text.contains("certificate") && text.contains("AWS_CA_BUNDLE"),
            "the error should name the certificate problem and the fix: {text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a certificate error must not be retried for the whole retry timeout"
        );

        let missing = S3Options {
            ca_bundle: Some(front.dir.path().join("nope.pem")),
            ..opts
        };
        let err = S3Store::open_with(&url, missing).await.unwrap_err();
        assert!(
            err.to_string().contains("AWS_CA_BUNDLE=") && err.to_string().contains("nope.pem"),
            "{err}"
        );
    });
}
