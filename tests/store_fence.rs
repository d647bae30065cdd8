//! One writer, checked against a real Redis: the lease's generation fences status writes, so a
//! deposed leader's late writes never overwrite what the new leader wrote.

mod common;

use std::time::Duration;

use common::{eventually, Redis};
use swarmlab::status::LabStatus;
use swarmlab::store::lease::Lease;
use swarmlab::store::{RedisStore, StoreReader};

fn status(message: &str) -> LabStatus {
    LabStatus { name: "fenced".into(), message: message.into(), ..Default::default() }
}

async fn message_in_redis(url: &str) -> Option<String> {
    let mut reader = StoreReader::connect(url).await.ok()?;
    reader.status("fenced").await.ok().flatten().map(|s| s.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_writes_are_dropped() {
    let redis = Redis::start();
    let url = redis.url();
    let old = Lease::new(&url, "old".into(), Duration::from_millis(600)).unwrap();
    let token_old = old.acquire().await;
    let old_store = RedisStore::new(&url).unwrap();
    old_store.fence_with(token_old);
    tokio::spawn(old_store.clone().run(std::future::pending()));
    old_store.put_status(&status("written by the leader"));
    let u = url.clone();
    let first = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        eventually("the leader's status written", Duration::from_secs(5), || {
            rt.block_on(message_in_redis(&u)).filter(|m| m == "written by the leader").ok_or_else(|| "not yet".to_string())
        })
    });
    first.await.unwrap();

    // The old leader stops renewing (it hangs); its lease expires and another labd takes it.
    let new = Lease::new(&url, "new".into(), Duration::from_secs(10)).unwrap();
    let token_new = tokio::time::timeout(Duration::from_secs(5), new.acquire()).await.expect("the lease passes on");
    assert_eq!(token_new, token_old + 1, "each holder gets the next generation");
    let new_store = RedisStore::new(&url).unwrap();
    new_store.fence_with(token_new);
    tokio::spawn(new_store.clone().run(std::future::pending()));
    new_store.put_status(&status("written by the new leader"));
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        eventually("the new leader's status written", Duration::from_secs(5), || {
            rt.block_on(message_in_redis(&u)).filter(|m| m == "written by the new leader").ok_or_else(|| "not yet".to_string())
        })
    })
    .await
    .unwrap();

    // The old leader wakes up and writes: fenced off.
    old_store.put_status(&status("a late write of the old leader"));
    tokio::time::sleep(Duration::from_secs(1)).await; // five flush cycles of the old store
    assert_eq!(message_in_redis(&url).await.as_deref(), Some("written by the new leader"));
    drop(redis);
}

/// Agents read desired shaping when labd says it wrote some: a lab deleted says so too, so its
/// agents stop shaping it (and writing its reports) at once rather than at their slow poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_shaping_written_or_deleted_is_announced_to_the_agents() {
    use futures::StreamExt;
    let redis = Redis::start();
    let url = redis.url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(swarmlab::store::keys::SHAPING_CHANGED).await.unwrap();
    let mut messages = pubsub.on_message();
    let store = RedisStore::new(&url).unwrap();
    tokio::spawn(store.clone().run(std::future::pending()));
    async fn said(messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin)) -> String {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next()).await.expect("a message within 5 s").expect("subscribed");
        message.get_payload::<String>().unwrap()
    }

    store.put_status(&LabStatus { name: "announced".into(), ..Default::default() });
    store.put_shaping("announced", Some(r#"{"a":{"lan":{"delay":"5ms"}}}"#.into()));
    assert_eq!(said(&mut messages).await, "announced", "shaping written");
    store.delete_lab("announced");
    assert_eq!(said(&mut messages).await, "announced", "the lab deleted");
    let mut reader = StoreReader::connect(&url).await.unwrap();
    assert!(!reader.labs().await.unwrap().contains(&"announced".to_string()), "deleted before it is said");
    drop(redis);
}
