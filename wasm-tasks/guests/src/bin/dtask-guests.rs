//! Prints the path of a built example guest or command fixture, for shell
//! scripts: `cargo run -q --release -p dtask-guests -- tasks`.

const GUESTS: &[(&str, &str)] = &[
    ("tasks", dtask_guests::TASKS_WASM),
    ("coord", dtask_guests::COORD_WASM),
    ("echo", dtask_guests::ECHO_WASM),
    ("wc", dtask_guests::WC_WASM),
    ("upper", dtask_guests::UPPER_WASM),
    ("cat", dtask_guests::CAT_WASM),
];

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "tasks".into());
    match GUESTS.iter().find(|(name, _)| *name == which) {
        Some((_, path)) => println!("{path}"),
        None => {
            let names: Vec<&str> = GUESTS.iter().map(|(name, _)| *name).collect();
            eprintln!(
                "dtask-guests: error: no guest named {which:?} (guests: {})",
                names.join(", ")
            );
            std::process::exit(2);
        }
    }
}
