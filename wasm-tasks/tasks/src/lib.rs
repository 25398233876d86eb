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

    fn hog(mib: u32) -> u64 {
        let mut v = vec![0u8; mib as usize * 1024 * 1024];
        for page in v.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&v);
        v.iter().step_by(4096).map(|b| *b as u64).sum::<u64>() * 4096
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

    fn skip_bytes(mut b: Vec<u8>, n: u64) -> Result<Vec<u8>, String> {
        let len = b.len();
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= len)
            .ok_or_else(|| format!("cannot skip {n} of {len} bytes"))?;
        b.drain(..n);
        Ok(b)
    }

    fn split_at(mut b: Vec<u8>, at: u64) -> Result<Split, String> {
        let len = b.len();
        let at = usize::try_from(at)
            .ok()
            .filter(|&at| at <= len)
            .ok_or_else(|| format!("cannot cut {len} bytes at {at}"))?;
        let tail = b.split_off(at);
        Ok(Split { head: b, tail })
    }

    fn sum_bytes(b: Vec<u8>) -> u64 {
        b.iter().map(|&x| u64::from(x)).sum()
    }

    fn count_bytes(n: u64, start: u32) -> Vec<u8> {
        (0..n).map(|i| (i + u64::from(start)) as u8).collect()
    }

    fn concat_bytes(mut a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
        a.extend_from_slice(&b);
        a
    }

    fn fail(message: String) -> i64 {
        panic!("{message}");
    }

    fn whoami() -> String {
        worker::current_key()
    }

    fn say(out: String, err: String) -> u32 {
        use std::io::Write;
        // Flushed: a guest's stdout buffers lines, and an export's return
        // ends the instance without flushing.
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush());
        let _ = std::io::stderr().write_all(err.as_bytes());
        (out.len() + err.len()) as u32
    }

    fn word_count(text: String) -> Vec<(String, u32)> {
        let mut counts = std::collections::BTreeMap::new();
        for word in text
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(word.to_lowercase()).or_insert(0u32) += 1;
        }
        counts.into_iter().collect()
    }

    fn merge_counts(a: Vec<(String, u32)>, b: Vec<(String, u32)>) -> Vec<(String, u32)> {
        let mut counts: std::collections::BTreeMap<String, u32> = a.into_iter().collect();
        for (w, n) in b {
            *counts.entry(w).or_insert(0) += n;
        }
        counts.into_iter().collect()
    }

    fn top_words(mut counts: Vec<(String, u32)>, n: u32) -> Vec<(String, u32)> {
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(n as usize);
        counts
    }

    fn pi_hits(seed: u64, n: u32) -> u32 {
        // xorshift64*: small, deterministic per seed.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .filter(|_| {
                let (a, b) = (next(), next());
                a * a + b * b <= 1.0
            })
            .count() as u32
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
