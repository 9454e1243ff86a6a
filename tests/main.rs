//! End-to-end tests: the real services on port 0 against a fresh database. They run on SQLite by default
//! and on PostgreSQL when `TEST_DATABASE_URL` points at a server (a fresh database is created per test).

mod support;

mod admin_cli;
mod faults;
mod faults_pg;
mod gateway_bench;
mod gateway_callbacks;
mod gateway_crash;
mod gateway_enumeration_bench;
mod gateway_kratos_courier;
mod gateway_limits;
mod gateway_messages;
mod gateway_retention;
mod gateway_retries;
mod gateway_smtp;
mod gateway_supabase;
mod gateway_twilio;
mod gateway_twilio_outbox;
mod gateway_verifications;
mod gateway_zitadel;
mod hardening_data;
mod kratos_guard;
mod kratos_guard_recovery;
mod kratos_hooks;
mod kratos_journey;
mod kratos_kit;
mod logs;
mod multi_instance;
mod openapi_documents;
mod ops_metrics;
mod plugin_api;
mod plugin_import;
mod plugin_import_kratos;
mod plugin_notices;
mod plugin_passwords;
mod proptest_inputs;
mod readme_claims;
mod secrets;
mod spine;
mod supabase_change_time;
mod supabase_hooks;
mod support_timeline;
mod walkthrough;
mod zitadel_hooks;
