//! Prints the path of a built example guest, for shell scripts:
//! `cargo run -q --release -p dtask-guests -- tasks`.

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "tasks".into());
    match which.as_str() {
        "tasks" => println!("{}", dtask_guests::TASKS_WASM),
        other => {
            eprintln!("dtask-guests: error: no guest named {other:?} (guests: tasks)");
            std::process::exit(2);
        }
    }
}
