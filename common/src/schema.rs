//! Tables owned by the shared plumbing. Each service declares its own tables in its own `schema.rs`.

diesel::table! {
    idempotency_keys (scope, key) {
        scope -> Text,
        key -> Text,
        request_digest -> Binary,
        status_code -> Integer,
        response_body -> Text,
        created_at -> Timestamp,
        subject -> Nullable<Text>,
    }
}
