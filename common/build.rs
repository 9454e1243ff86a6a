// `embed_migrations!` reads the migration folders at compile time; rebuild when they change so a new
// migration is never left out of the binary.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
