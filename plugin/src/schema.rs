//! Tables owned by the plugin (migrations `2026-11-22-0001NN_*`, `2026-11-29-000701_legacy_passwords` and
//! `2026-11-29-000902_import_checkpoints`, `2026-11-30-000101_notices`).

diesel::table! {
    password_states (identity_id) {
        identity_id -> Text,
        history_salt -> Binary,
        profile -> Nullable<Text>,
        schema_id -> Nullable<Text>,
        changed_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        must_change_reason -> Nullable<Text>,
        grace_logins_used -> Integer,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    password_history (id) {
        id -> BigInt,
        identity_id -> Text,
        kind -> Text,
        params -> Text,
        digest -> Nullable<Binary>,
        foreign_hash -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(password_history -> password_states (identity_id));
diesel::allow_tables_to_appear_in_same_query!(password_states, password_history);

diesel::table! {
    legacy_passwords (identifier) {
        identifier -> Text,
        holder -> Text,
        migrated_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    guard_verdicts (kind, flow_id) {
        kind -> Text,
        flow_id -> Text,
        identity_id -> Nullable<Text>,
        allowed -> Bool,
        codes -> Text,
        messages -> Text,
        digest -> Nullable<Binary>,
        params -> Nullable<Text>,
        salt -> Nullable<Binary>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        accepted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    import_checkpoints (source) {
        source -> Text,
        page_token -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    notices (id) {
        id -> Text,
        identity_id -> Text,
        kind -> Text,
        dedupe_key -> Text,
        channel -> Text,
        recipient -> Text,
        locale -> Text,
        data -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        gateway_message_id -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}
