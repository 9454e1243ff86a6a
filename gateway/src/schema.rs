//! The gateway's tables (migrations `2026-11-22-0002NN_*`, `2026-11-29-000501_delivery_steps` and
//! `2026-11-29-001001_send_limits`, `2026-11-29-001101_verifications`, `2026-11-30-000201_support_timeline`).

diesel::table! {
    gateway_messages (id) {
        id -> Text,
        channel -> Text,
        destination -> Text,
        template -> Text,
        locale -> Text,
        data -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        provider -> Nullable<Text>,
        provider_message_id -> Nullable<Text>,
        last_error -> Nullable<Text>,
        fallback -> Text,
        fallback_position -> Integer,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        step_attempts -> Integer,
        unrecorded_claims -> Integer,
        early_report_sid -> Nullable<Text>,
        early_report_outcome -> Nullable<Text>,
        early_report_error_code -> Nullable<Text>,
        /// The address the message was first sent to, emails lowercased (migration
        /// `2026-11-30-000201_support_timeline`).
        recipient -> Nullable<Text>,
    }
}

diesel::table! {
    gateway_attempts (message_id, number) {
        message_id -> Text,
        number -> Integer,
        channel -> Text,
        provider -> Text,
        outcome -> Text,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        provider_message_id -> Nullable<Text>,
        latency_ms -> BigInt,
        started_at -> Timestamp,
    }
}

diesel::table! {
    gateway_verifications (id) {
        id -> Text,
        purpose -> Text,
        channel -> Text,
        destination -> Text,
        locale -> Text,
        kind -> Text,
        secret_digest -> Text,
        secret_sealed -> Text,
        superseded_digests -> Text,
        link_url -> Nullable<Text>,
        identity_id -> Nullable<Text>,
        known -> Bool,
        status -> Text,
        checks -> Integer,
        sends -> Integer,
        last_sent_at -> Timestamp,
        expires_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    gateway_verification_sends (verification_id, number) {
        verification_id -> Text,
        number -> Integer,
        channel -> Text,
        message_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Sends counted by the abuse limits (migration `2026-11-29-001001_send_limits`).
    gateway_limit_sends (id) {
        id -> Text,
        scope -> Text,
        key_digest -> Text,
        sent_at -> Timestamp,
        expires_at -> Timestamp,
    }
}
