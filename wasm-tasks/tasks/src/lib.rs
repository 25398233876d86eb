//! dtask's example tasks: small functions over every kind of WIT value,
//! plus a few that misbehave on purpose, for the tour, tests and benchmarks.

wit_bindgen::generate!({
    world: "dtask:examples/tasks@0.1.0",
    path: ["../wit", "wit"],
    generate_all,
});

use dtask::task::worker;
use std::time::{Duration, Instant};

struct Tasks;

impl Guest for Tasks {
    fn inc(x: i64) -> i64 {
        x + 1
    }

    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    fn div(a: i64, b: i64) -> i64 {
        if b == 0 {
            panic!("division by zero: {a} / 0");
        }
        a / b
    }

    fn greet(name: String) -> String {
        format!("Hello, {name}!")
    }

    fn total(xs: Vec<i64>) -> i64 {
        xs.iter().sum()
    }

    fn norm(p: Point) -> f64 {
        p.x.hypot(p.y)
    }

    fn translate(p: Point, dx: f64, dy: f64) -> Point {
        Point {
            x: p.x + dx,
            y: p.y + dy,
        }
    }

    fn parse_int(s: String) -> Result<i64, String> {
        s.trim()
            .parse()
            .map_err(|e| format!("{s:?} is not an integer: {e}"))
    }

    fn color_name(c: Color) -> String {
        match c {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
        }
        .to_string()
    }

    fn next_color(c: Color) -> Color {
        match c {
            Color::Red => Color::Green,
            Color::Green => Color::Blue,
            Color::Blue => Color::Red,
        }
    }

    fn area(s: Shape) -> f64 {
        match s {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Rectangle(p) => (p.x * p.y).abs(),
            Shape::Dot => 0.0,
        }
    }

    fn first(xs: Vec<i64>) -> Option<i64> {
        xs.first().copied()
    }

    fn spin(ms: u64) -> u64 {
        let until = Instant::now() + Duration::from_millis(ms);
        let mut n = 0u64;
        while Instant::now() < until {
            n = n.wrapping_add(1);
            std::hint::black_box(n);
        }
        ms
    }

    fn repeat(s: String, n: u32) -> String {
        s.repeat(n as usize)
    }

    fn len(s: String) -> u64 {
        s.len() as u64
    }

    fn reverse_bytes(mut b: Vec<u8>) -> Vec<u8> {
        b.reverse();
        b
    }

    fn fail(message: String) -> i64 {
        panic!("{message}");
    }

    fn whoami() -> String {
        worker::current_key()
    }

    fn fails_before(unix_ms: u64) -> u64 {
        Self::spin(20);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now < unix_ms {
            panic!("not yet: {} ms to go", unix_ms - now);
        }
        unix_ms
    }
}

export!(Tasks);
