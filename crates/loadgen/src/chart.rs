//! The PNG chart of a run: deliveries per second over time (top) and latency p50 / p99 per
//! second (bottom), drawn into a pixel buffer with a built-in 5x7 font so it needs no font
//! files or plotting library.

use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;

const W: usize = 900;
const H: usize = 560;
const MARGIN_L: usize = 80;
const MARGIN_R: usize = 20;
const PANEL_H: usize = 220;
const TOP1: usize = 40;
const TOP2: usize = 310;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const GRID: Rgb = [225, 228, 232];
const AXIS: Rgb = [90, 96, 104];
const BLUE: Rgb = [79, 70, 229];
const GREEN: Rgb = [22, 163, 74];
const RED: Rgb = [220, 38, 38];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            px: [WHITE; W * H].concat(),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            self.set(x, y + 1, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the built-in font, scale 2 (10x14 pixels a character).
    fn text(&mut self, x: usize, y: usize, s: &str, c: Rgb) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(
                                (x + i * 12 + col * 2 + dx) as i64,
                                (y + r * 2 + dy) as i64,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// 5x7 glyphs of the characters the chart uses (others draw as blank).
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '/' => [1, 1, 2, 4, 8, 16, 16],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        _ => [0; 7],
    }
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}K", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One panel: series of (t, value) scaled into the panel at `top`.
fn panel(c: &mut Canvas, top: usize, title: &str, series: &[(&[(f64, f64)], Rgb)], t_max: f64) {
    let (left, right, bottom) = (MARGIN_L, W - MARGIN_R, top + PANEL_H);
    let v_max = series
        .iter()
        .flat_map(|(s, _)| s.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    for k in 0..=4 {
        let y = bottom - k * PANEL_H / 4;
        c.line((left as i64, y as i64), (right as i64, y as i64), GRID);
        let v = label(v_max * k as f64 / 4.0);
        c.text(left.saturating_sub(12 * v.len() + 6), y - 7, &v, AXIS);
    }
    c.line(
        (left as i64, top as i64),
        (left as i64, bottom as i64),
        AXIS,
    );
    c.line(
        (left as i64, bottom as i64),
        (right as i64, bottom as i64),
        AXIS,
    );
    c.text(left, top - 24, title, AXIS);
    let x_of = |t: f64| left as f64 + t / t_max.max(1e-9) * (right - left) as f64;
    let y_of = |v: f64| bottom as f64 - v / v_max * PANEL_H as f64;
    for (points, color) in series {
        for pair in points.windows(2) {
            let a = (x_of(pair[0].0) as i64, y_of(pair[0].1) as i64);
            let b = (x_of(pair[1].0) as i64, y_of(pair[1].1) as i64);
            c.line(a, b, *color);
        }
    }
}

pub(crate) fn draw(result: &Value, path: &Path) -> Result<()> {
    let rows = result["seconds"]
        .as_array()
        .context("the chart needs a scenario with per-second rows")?;
    let get = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .map(|r| {
                (
                    r["t"].as_f64().unwrap_or(0.0),
                    r[key].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let (deliveries, p50, p99) = (get("deliveries"), get("p50_ms"), get("p99_ms"));
    let t_max = deliveries.last().map(|p| p.0).unwrap_or(1.0);
    let mut c = Canvas::new();
    let name = format!(
        "{} {}",
        result["scenario"].as_str().unwrap_or(""),
        result["dialect"].as_str().unwrap_or("")
    );
    panel(
        &mut c,
        TOP1,
        &format!("{name}: DELIVERIES/S"),
        &[(&deliveries, BLUE)],
        t_max,
    );
    panel(
        &mut c,
        TOP2,
        "LATENCY MS: P50 (GREEN) P99 (RED)",
        &[(&p50, GREEN), (&p99, RED)],
        t_max,
    );
    c.text(W / 2 - 40, H - 22, &format!("T (S) 0-{t_max:.0}"), AXIS);

    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&c.px)?;
    Ok(())
}
