//! Gateway: the abuse limits (`reclaim_gateway::limits`) driven directly on a real migrated database —
//! each limit's reason code and Retry-After, sends allowed again when the window has passed (the clock is
//! passed in: nothing sleeps), exact limits across three "instances" (three pools) racing on one database,
//! the country allow-list and number types, the in-process front, the refusal metric and the janitor.

use crate::support::TestDatabase;
use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use governor::clock::FakeRelativeClock;
use reclaim_common::db::write_transaction;
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::{DatabaseSettings, DatabaseUrl, GatewaySettings};
use reclaim_common::Db;
use reclaim_gateway::address::Destination;
use reclaim_gateway::channel::Channel;
use reclaim_gateway::limits::{LimitScope, Limits, Reason, Refusal, SendAttempt};
use reclaim_gateway::metrics::GatewayMetrics;
use reclaim_gateway::schema::gateway_limit_sends;
use std::net::IpAddr;
use std::time::Duration;

struct Instance {
    db: Db,
    limits: Limits<FakeRelativeClock>,
    metrics: GatewayMetrics,
    clock: FakeRelativeClock,
}

fn connect(database: &TestDatabase, pool_size: u32) -> Db {
    let db = Db::connect(&DatabaseSettings {
        url: DatabaseUrl::new(database.url.clone()),
        pool_size,
        ..DatabaseSettings::default()
    })
    .expect("connect");
    db.migrate().expect("migrate");
    db
}

fn instance(database: &TestDatabase, settings: &GatewaySettings) -> Instance {
    let db = connect(database, 4);
    let metrics =
        GatewayMetrics::register(&prometheus::Registry::new(), db.clone()).expect("metrics");
    let clock = FakeRelativeClock::default();
    let limits = Limits::with_clock(
        settings,
        Keyring::development(),
        Some(metrics.clone()),
        clock.clone(),
    );
    Instance {
        db,
        limits,
        metrics,
        clock,
    }
}

impl Instance {
    fn admit(&self, attempt: &SendAttempt<'_>, now: NaiveDateTime) -> Result<(), Refusal> {
        let mut conn = self.db.get().expect("conn");
        write_transaction(&mut conn, |c| self.limits.admit(c, attempt, now)).expect("admit")
    }

    fn refusals(&self, reason: Reason) -> u64 {
        self.metrics
            .limit_refusals
            .with_label_values(&[reason.scope().as_str(), reason.as_str()])
            .get()
    }

    fn rows(&self) -> i64 {
        let mut conn = self.db.get().expect("conn");
        gateway_limit_sends::table
            .count()
            .get_result(&mut *conn)
            .expect("count")
    }
}

fn t0() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 29)
        .and_then(|d| d.and_hms_opt(9, 0, 0))
        .expect("date")
}

fn at(seconds: i64) -> NaiveDateTime {
    t0() + TimeDelta::seconds(seconds)
}

fn email(to: &str) -> Destination {
    Destination::parse(Channel::Email, to).expect("email")
}

fn phone(to: &str) -> Destination {
    Destination::parse(Channel::Sms, to).expect("phone")
}

fn to(destination: &Destination) -> SendAttempt<'_> {
    SendAttempt {
        channel: Channel::Email,
        destination,
        client_ip: None,
        identity_id: None,
    }
}

fn waits(reason: Reason, seconds: u64) -> Result<(), Refusal> {
    Err(Refusal {
        reason,
        retry_after: Some(Duration::from_secs(seconds)),
    })
}

#[test]
fn a_destination_has_a_cooldown_and_a_sliding_window() {
    let database = TestDatabase::fresh();
    let gateway = instance(&database, &GatewaySettings::default());
    let jane = email("jane@example.com");
    let attempt = to(&jane);
    assert_eq!(gateway.admit(&attempt, at(0)), Ok(()));
    assert_eq!(
        gateway.admit(&attempt, at(10)),
        waits(Reason::DestinationCooldown, 20)
    );
    // Case buys no extra sends.
    let shouted = email("JANE@EXAMPLE.COM");
    assert_eq!(
        gateway.admit(&to(&shouted), at(29)),
        waits(Reason::DestinationCooldown, 1)
    );
    for seconds in [30, 60, 90, 120] {
        assert_eq!(gateway.admit(&attempt, at(seconds)), Ok(()), "{seconds}");
    }
    // Five sends in the hour: the next is allowed when the first leaves the window, at 3600 s.
    let refused = gateway
        .admit(&attempt, at(200))
        .expect_err("window is full");
    assert_eq!(refused, waits(Reason::DestinationWindow, 3400).unwrap_err());
    assert_eq!(refused.scope(), LimitScope::Destination);
    let response = refused.error_response();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("3400")
    );
    assert_eq!(
        gateway.admit(&attempt, at(3599)),
        waits(Reason::DestinationWindow, 1)
    );
    assert_eq!(gateway.admit(&attempt, at(3600)), Ok(()));
    // Another destination was never limited.
    assert_eq!(
        gateway.admit(&to(&email("joe@example.com")), at(10)),
        Ok(())
    );
    assert_eq!(gateway.refusals(Reason::DestinationCooldown), 2);
    assert_eq!(gateway.refusals(Reason::DestinationWindow), 2);
    // SMS and voice to one number count together.
    let number = phone("+14155550100");
    let sms = SendAttempt {
        channel: Channel::Sms,
        ..to(&number)
    };
    let voice = SendAttempt {
        channel: Channel::Voice,
        ..to(&number)
    };
    assert_eq!(gateway.admit(&sms, at(0)), Ok(()));
    assert_eq!(
        gateway.admit(&voice, at(5)),
        waits(Reason::DestinationCooldown, 25)
    );
}

#[test]
fn client_ips_count_by_address_and_ipv6_by_its_64_network() {
    let database = TestDatabase::fresh();
    let mut settings = GatewaySettings::default();
    settings.limits.ip.max_sends = 3;
    settings.limits.ip.window_seconds = 600;
    let gateway = instance(&database, &settings);
    let destinations: Vec<Destination> = (0..10)
        .map(|i| email(&format!("user{i}@example.com")))
        .collect();
    let from = |i: usize, ip: &str| SendAttempt {
        client_ip: Some(ip.parse::<IpAddr>().expect("ip")),
        ..to(&destinations[i])
    };
    for (i, seconds) in [(0, 0), (1, 100), (2, 200)] {
        assert_eq!(gateway.admit(&from(i, "203.0.113.7"), at(seconds)), Ok(()));
    }
    assert_eq!(
        gateway.admit(&from(3, "203.0.113.7"), at(250)),
        waits(Reason::IpWindow, 350)
    );
    // The same address written as IPv4-mapped IPv6 is the same client.
    assert_eq!(
        gateway.admit(&from(3, "::ffff:203.0.113.7"), at(250)),
        waits(Reason::IpWindow, 350)
    );
    // Refused by two limits: the answer is the longer wait (the IP's 340 s, not the cooldown's 20 s).
    let again = SendAttempt {
        client_ip: Some("203.0.113.7".parse().expect("ip")),
        ..to(&destinations[2])
    };
    assert_eq!(gateway.admit(&again, at(210)), waits(Reason::IpWindow, 390));
    assert_eq!(gateway.admit(&from(3, "203.0.113.8"), at(250)), Ok(()));
    assert_eq!(gateway.admit(&from(4, "203.0.113.7"), at(600)), Ok(()));

    for (i, ip) in [
        (5, "2001:db8:1:2::1"),
        (6, "2001:db8:1:2::2"),
        (7, "2001:db8:1:2:ffff::9"),
    ] {
        assert_eq!(gateway.admit(&from(i, ip), at(1000)), Ok(()));
    }
    assert_eq!(
        gateway.admit(&from(8, "2001:db8:1:2:1234::1"), at(1000)),
        waits(Reason::IpWindow, 600)
    );
    assert_eq!(gateway.admit(&from(8, "2001:db8:1:3::1"), at(1000)), Ok(()));
    assert_eq!(gateway.refusals(Reason::IpWindow), 4);
    let refusal = gateway
        .admit(&from(9, "2001:db8:1:2::1"), at(1000))
        .expect_err("refused");
    assert_eq!(refusal.error_response().status().as_u16(), 429);
    assert_eq!(refusal.reason.field(), "client_ip");
}

#[test]
fn an_identity_has_its_own_window_and_disabled_limits_count_nothing() {
    let database = TestDatabase::fresh();
    let mut settings = GatewaySettings::default();
    settings.limits.identity.max_sends = 2;
    settings.limits.identity.window_seconds = 300;
    settings.limits.ip.enabled = false;
    let gateway = instance(&database, &settings);
    let (a, b, c) = (
        email("a@example.com"),
        email("b@example.com"),
        email("c@example.com"),
    );
    let for_identity = |destination, identity| SendAttempt {
        identity_id: Some(identity),
        client_ip: Some("198.51.100.1".parse().expect("ip")),
        ..to(destination)
    };
    assert_eq!(gateway.admit(&for_identity(&a, "id-1"), at(0)), Ok(()));
    assert_eq!(gateway.admit(&for_identity(&b, "id-1"), at(60)), Ok(()));
    assert_eq!(
        gateway.admit(&for_identity(&c, "id-1"), at(120)),
        waits(Reason::IdentityWindow, 180)
    );
    assert_eq!(gateway.admit(&for_identity(&c, "id-2"), at(120)), Ok(()));
    assert_eq!(gateway.admit(&for_identity(&c, "id-1"), at(300)), Ok(()));
    assert_eq!(gateway.refusals(Reason::IdentityWindow), 1);
    // The IP limit is off: one row per send for the destination and the identity, none for the IP.
    assert_eq!(gateway.rows(), 8);
    let mut conn = gateway.db.get().expect("conn");
    let ip_rows: i64 = gateway_limit_sends::table
        .filter(gateway_limit_sends::scope.eq("ip"))
        .count()
        .get_result(&mut *conn)
        .expect("count");
    assert_eq!(ip_rows, 0);
}

#[test]
fn numbers_sharing_a_prefix_are_capped_per_hour_for_sms_and_voice() {
    let database = TestDatabase::fresh();
    let mut settings = GatewaySettings::default();
    settings.sms.prefix_max_sends_per_hour = 3;
    settings.sms.prefix_digits = 9;
    let gateway = instance(&database, &settings);
    let numbers: Vec<Destination> = ["+447400123001", "+447400123002", "+447400123003"]
        .into_iter()
        .chain(["+447400123004", "+447400124001"])
        .map(phone)
        .collect();
    let send = |channel, i: usize| SendAttempt {
        channel,
        ..to(&numbers[i])
    };
    assert_eq!(gateway.admit(&send(Channel::Sms, 0), at(0)), Ok(()));
    assert_eq!(gateway.admit(&send(Channel::Voice, 1), at(10)), Ok(()));
    assert_eq!(gateway.admit(&send(Channel::Sms, 2), at(20)), Ok(()));
    assert_eq!(
        gateway.admit(&send(Channel::Sms, 3), at(30)),
        waits(Reason::PrefixWindow, 3570)
    );
    // +44740012400... is another range.
    assert_eq!(gateway.admit(&send(Channel::Sms, 4), at(30)), Ok(()));
    assert_eq!(gateway.admit(&send(Channel::Voice, 3), at(3600)), Ok(()));
    assert_eq!(gateway.refusals(Reason::PrefixWindow), 1);
    // Email has no prefix: no prefix rows for it.
    let before = gateway.rows();
    assert_eq!(
        gateway.admit(&to(&email("someone@example.com")), at(0)),
        Ok(())
    );
    assert_eq!(gateway.rows(), before + 1);
}

/// The national example number of `region` for `kind`, in E.164.
fn example(region: &str, kind: phonenumber::Type) -> String {
    let metadata = phonenumber::metadata::DATABASE
        .by_id(region)
        .expect("region");
    let national = metadata
        .descriptors()
        .get(kind)
        .and_then(|d| d.example())
        .unwrap_or_else(|| panic!("{region} has an example of {kind:?}"));
    format!("+{}{national}", metadata.country_code())
}

#[test]
fn countries_outside_the_allow_list_and_refused_number_types_are_refused_for_good() {
    use phonenumber::Type;
    let database = TestDatabase::fresh();
    let mut settings = GatewaySettings::default();
    settings.sms.allowed_countries = vec!["GB".into(), "+34".into(), "us".into()];
    let gateway = instance(&database, &settings);
    let limits = &gateway.limits;
    let refused = |reason| {
        Err(Refusal {
            reason,
            retry_after: None,
        })
    };
    for allowed in [
        example("GB", Type::Mobile),
        example("ES", Type::Mobile),
        "+14155550100".to_string(),
    ] {
        for channel in [Channel::Sms, Channel::Voice] {
            assert_eq!(
                limits.screen(channel, &phone(&allowed)),
                Ok(()),
                "{allowed}"
            );
        }
    }
    // Jamaica shares +1 with the US: only the region tells them apart.
    for outside in [
        example("JM", Type::Mobile),
        example("FR", Type::Mobile),
        example("DE", Type::Mobile),
    ] {
        assert_eq!(
            limits.screen(Channel::Sms, &phone(&outside)),
            refused(Reason::CountryNotAllowed),
            "{outside}"
        );
    }
    assert_eq!(gateway.refusals(Reason::CountryNotAllowed), 3);

    // The default refused types (no allow-list: every country), from the metadata's own examples.
    let typed = instance(&database, &GatewaySettings::default());
    for (region, kind) in [
        ("GB", Type::PremiumRate),
        ("GB", Type::TollFree),
        ("GB", Type::PersonalNumber),
        ("GB", Type::Uan),
        ("GB", Type::Pager),
        ("ES", Type::SharedCost),
        ("DE", Type::Voicemail),
        ("US", Type::PremiumRate),
        ("US", Type::TollFree),
        ("FR", Type::PremiumRate),
    ] {
        let number = phone(&example(region, kind));
        for channel in [Channel::Sms, Channel::Voice] {
            assert_eq!(
                typed.limits.screen(channel, &number),
                refused(Reason::NumberTypeRefused),
                "{region} {kind:?}"
            );
        }
    }
    // UK premium rate, written by hand: +44 909 ...
    assert_eq!(
        typed.limits.screen(Channel::Sms, &phone("+449098790123")),
        refused(Reason::NumberTypeRefused)
    );
    for (region, kind) in [
        ("GB", Type::FixedLine),
        ("GB", Type::Mobile),
        ("GB", Type::Voip),
        ("FR", Type::Mobile),
        ("US", Type::Mobile),
    ] {
        assert_eq!(
            typed
                .limits
                .screen(Channel::Voice, &phone(&example(region, kind))),
            Ok(()),
            "{region} {kind:?}"
        );
    }
    assert_eq!(
        typed
            .limits
            .screen(Channel::Email, &email("jane@example.fr")),
        Ok(())
    );
    // admit screens too, and records nothing for a refused number.
    let premium = phone(&example("GB", Type::PremiumRate));
    let attempt = SendAttempt {
        channel: Channel::Sms,
        ..to(&premium)
    };
    let refusal = typed.admit(&attempt, at(0)).expect_err("refused");
    assert_eq!(refusal.reason, Reason::NumberTypeRefused);
    assert!(refusal.is_permanent());
    let response = refusal.error_response();
    assert_eq!(response.status().as_u16(), 422);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(typed.rows(), 0);
    assert_eq!(typed.refusals(Reason::NumberTypeRefused), 10 * 2 + 2);
    assert_eq!(typed.refusals(Reason::CountryNotAllowed), 0);

    // Without an allow-list every country passes; an empty refused list lets every type through.
    let mut open = GatewaySettings::default();
    open.sms.refused_number_types.clear();
    let open = instance(&database, &open);
    for number in [
        example("FR", Type::Mobile),
        example("GB", Type::PremiumRate),
    ] {
        assert_eq!(
            open.limits.screen(Channel::Sms, &phone(&number)),
            Ok(()),
            "{number}"
        );
    }
}

#[test]
fn concurrent_admits_on_three_instances_allow_exactly_the_limit() {
    let database = TestDatabase::fresh();
    let mut settings = GatewaySettings::default();
    settings.limits.destination.cooldown_seconds = 0;
    settings.limits.destination.max_sends = 5;
    let instances: Vec<Instance> = (0..3)
        .map(|_| {
            let mut one = instance(&database, &settings);
            one.db = connect(&database, 10);
            one
        })
        .collect();
    let number = phone("+14155550100");
    let barrier = std::sync::Barrier::new(30);
    let admitted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let instance = &instances[i % 3];
                let barrier = &barrier;
                let number = &number;
                scope.spawn(move || {
                    let attempt = SendAttempt {
                        channel: Channel::Sms,
                        destination: number,
                        client_ip: None,
                        identity_id: None,
                    };
                    barrier.wait();
                    // Each send a millisecond apart, so that the window is what limits them.
                    let now = t0() + TimeDelta::milliseconds(i as i64);
                    instance.admit(&attempt, now).is_ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(admitted, 5);
    let refused: u64 = instances
        .iter()
        .map(|i| i.refusals(Reason::DestinationWindow))
        .sum();
    assert_eq!(refused, 25);
    let mut conn = instances[0].db.get().expect("conn");
    let destination_rows: i64 = gateway_limit_sends::table
        .filter(gateway_limit_sends::scope.eq("destination"))
        .count()
        .get_result(&mut *conn)
        .expect("count");
    assert_eq!(destination_rows, 5);
}

#[test]
fn the_in_process_front_refuses_early_and_never_refuses_what_the_database_allows() {
    let database = TestDatabase::fresh();
    let settings = GatewaySettings::default();
    let gateway = instance(&database, &settings);
    let other = instance(&database, &settings);
    let number = phone("+14155550100");
    let attempt = SendAttempt {
        channel: Channel::Sms,
        destination: &number,
        client_ip: Some("192.0.2.1".parse().expect("ip")),
        identity_id: Some("id-1"),
    };
    assert_eq!(gateway.limits.precheck(&attempt), Ok(()));
    assert_eq!(gateway.admit(&attempt, at(0)), Ok(()));
    assert_eq!(
        gateway.limits.precheck(&attempt),
        waits(Reason::DestinationCooldown, 30)
    );
    assert_eq!(gateway.refusals(Reason::DestinationCooldown), 1);
    // Another instance's front has not seen that send: it lets the attempt through to its database, which
    // refuses it. The fronts never add sends.
    assert_eq!(other.limits.precheck(&attempt), Ok(()));
    assert_eq!(
        other.admit(&attempt, at(1)),
        waits(Reason::DestinationCooldown, 29)
    );

    // A schedule of attempts (some bursts, some pauses) on one instance: whenever the front refuses, the
    // database refuses too; both clocks move together.
    let mut elapsed = 0u64;
    let (mut front_refused, mut admitted) = (0, 1);
    let mut step = 7u64;
    for _ in 0..200 {
        // A small linear congruential sequence: pauses between 0 and 900 s, deterministic.
        step = (step * 1_103_515_245 + 12_345) % 2_147_483_648;
        let pause = if step.is_multiple_of(3) {
            0
        } else {
            step % 901
        };
        elapsed += pause;
        gateway.clock.advance(Duration::from_secs(pause));
        let now = at(i64::try_from(elapsed).expect("seconds"));
        let front = gateway.limits.precheck(&attempt);
        let decided = gateway.admit(&attempt, now);
        if front.is_err() {
            front_refused += 1;
            assert!(
                decided.is_err(),
                "front refused at {elapsed} s what the database allowed"
            );
        }
        if decided.is_ok() {
            admitted += 1;
        }
    }
    assert!(front_refused > 0, "the schedule never hit the front");
    assert!(admitted > 5, "the schedule never waited out a window");
}

#[tokio::test]
async fn the_janitor_deletes_limit_records_once_no_limit_counts_them() {
    use reclaim_gateway::retention::Janitor;
    let database = TestDatabase::fresh();
    let gateway = instance(&database, &GatewaySettings::default());
    let number = phone("+14155550100");
    let attempt = SendAttempt {
        channel: Channel::Sms,
        destination: &number,
        client_ip: Some("192.0.2.1".parse().expect("ip")),
        identity_id: None,
    };
    // Destination, IP and prefix rows at 0 s; a second set an hour later.
    assert_eq!(gateway.admit(&attempt, at(0)), Ok(()));
    assert_eq!(gateway.admit(&attempt, at(3600)), Ok(()));
    assert_eq!(gateway.rows(), 6);
    let janitor = Janitor::new(
        gateway.db.clone(),
        Default::default(),
        gateway.metrics.clone(),
    );
    let utc = |t: NaiveDateTime| t.and_utc();
    assert_eq!(
        janitor
            .run_once(utc(at(3599)))
            .await
            .expect("run")
            .limit_records,
        0
    );
    assert_eq!(
        janitor
            .run_once(utc(at(3600)))
            .await
            .expect("run")
            .limit_records,
        3
    );
    assert_eq!(gateway.rows(), 3);
    // What is left still counts: the cooldown from the send at 3600 s holds.
    assert_eq!(
        gateway.admit(&attempt, at(3610)),
        waits(Reason::DestinationCooldown, 20)
    );
    assert_eq!(
        gateway
            .metrics
            .retention_deleted
            .with_label_values(&["limit_records"])
            .get(),
        3
    );
}
