//! The SVG plot.

use super::replay::Series;

pub fn render_svg(_series: &Series, _title: &str) -> Result<String, String> {
    Err("not yet".into())
}
