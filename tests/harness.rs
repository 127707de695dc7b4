//! Self-test of the in-process S3 server: if these fail, the daemon tests prove nothing.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use support::s3::TestS3;
use support::{BUCKET, Fault, Op, S3ErrorCode, content};

async fn put(s3: &TestS3, key: &str, body: &[u8]) -> Result<(), String> {
    s3.client()
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .metadata("sha256", support::sha256_hex(body))
        .if_none_match("*")
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            e.as_service_error()
                .and_then(|se| aws_sdk_s3::error::ProvideErrorMetadata::code(se))
                .unwrap_or("no code")
                .to_owned()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_objects_with_sigv4_and_counts_writes() {
    let s3 = TestS3::start().await;
    let key = "incoming/Rechnungen/März/Übersicht ñ 東京.pdf";
    let body = content(1, 70_000);

    put(&s3, key, &body).await.expect("first put");
    assert_eq!(s3.get(BUCKET, key).await.as_deref(), Some(body.as_slice()));
    assert!(s3.exists(BUCKET, key));
    assert_eq!(s3.list(BUCKET).await, vec![key.to_owned()]);
    let meta = s3.head_meta(BUCKET, key).await.expect("head");
    assert_eq!(meta.get("sha256"), Some(&support::sha256_hex(&body)));
    assert_eq!(s3.puts(key).await, 1);

    // If-None-Match: * protects the existing object.
    assert_eq!(
        put(&s3, key, b"other").await,
        Err("PreconditionFailed".into())
    );
    assert_eq!(s3.puts(key).await, 1);
    assert_eq!(s3.requests_for(Op::PutObject, key), 2);
    assert_eq!(s3.get(BUCKET, "missing").await, None);
    assert_eq!(s3.head_meta(BUCKET, "missing").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_only_the_scripted_key_the_scripted_number_of_times() {
    let s3 = TestS3::start().await;
    let bad = "incoming/bad ü.bin";
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::InvalidArgument)
            .for_key(bad)
            .times(2),
    );

    put(&s3, "incoming/good.bin", b"good")
        .await
        .expect("other key unaffected");
    assert_eq!(put(&s3, bad, b"x").await, Err("InvalidArgument".into()));
    assert_eq!(put(&s3, bad, b"x").await, Err("InvalidArgument".into()));
    assert!(s3.plan.is_drained());
    put(&s3, bad, b"x").await.expect("faults used up");
    assert_eq!(s3.puts(bad).await, 1);
    assert_eq!(s3.get(BUCKET, bad).await.as_deref(), Some(&b"x"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_after_writes_the_object_but_reports_an_error() {
    let s3 = TestS3::start().await;
    // The SDK would retry the 500 itself; If-None-Match then turns the retry into a 412.
    s3.push(
        Op::PutObject,
        Fault::fail_after(S3ErrorCode::InternalError).for_key("k"),
    );
    let res = put(&s3, "k", b"payload").await;
    assert!(res.is_err(), "client must see an error, got {res:?}");
    assert_eq!(s3.puts("k").await, 1);
    assert_eq!(s3.get(BUCKET, "k").await.as_deref(), Some(&b"payload"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_and_persistent_faults() {
    let s3 = TestS3::start().await;
    s3.push(
        Op::HeadBucket,
        Fault::reject(S3ErrorCode::AccessDenied).always(),
    );
    for _ in 0..3 {
        let res = s3.client().head_bucket().bucket(BUCKET).send().await;
        assert!(res.is_err());
    }
    assert_eq!(s3.plan.remaining(Op::HeadBucket), usize::MAX);
    s3.plan.clear();
    s3.client()
        .head_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("fault cleared");

    s3.push(Op::PutObject, Fault::delay(Duration::from_millis(700)));
    let t0 = Instant::now();
    put(&s3, "slow", b"s").await.expect("delayed put");
    assert!(t0.elapsed() >= Duration::from_millis(700));
}
