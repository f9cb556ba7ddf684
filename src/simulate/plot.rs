//! The SVG plot: demand against ready capacity stacked by pool, private pools in greens and
//! blues, public pools in oranges and reds, burst periods shaded. Two panels: the whole run, and
//! the week with the most public use at full detail, where start-up delays and failback show.
//! Rendering to a string is pure; the caller writes the file.

use super::replay::Series;
use super::trace::format_timestamp;
use plotters::prelude::*;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 960;
/// Columns drawn per panel: enough for the eye, few enough for a small file.
const MAX_POINTS: usize = 1400;

const PRIVATE_COLOURS: [RGBColor; 4] = [
    RGBColor(46, 139, 87),
    RGBColor(70, 130, 180),
    RGBColor(102, 194, 165),
    RGBColor(31, 78, 121),
];
const PUBLIC_COLOURS: [RGBColor; 4] = [
    RGBColor(244, 165, 60),
    RGBColor(215, 48, 39),
    RGBColor(253, 219, 120),
    RGBColor(153, 52, 4),
];

/// Renders `series` as an SVG document.
pub fn render_svg(series: &Series, title: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 24))
            .map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2 - 20);
        let steps = series.demand.len();
        panel(
            &top,
            series,
            0,
            steps,
            "Whole run (each column: the busiest step of its span)",
        )
        .map_err(|e| e.to_string())?;
        let (from, to) = busiest_week(series);
        let caption = format!(
            "Week with the most public replicas: {} to {}",
            &format_timestamp(series.start + from as i64 * series.step)[..10],
            &format_timestamp(series.start + to.saturating_sub(1) as i64 * series.step)[..10]
        );
        panel(&bottom, series, from, to, &caption).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Steps `[from, to)` of the seven days with the most public replica-steps (or, without any
/// bursting, around the demand peak).
fn busiest_week(series: &Series) -> (usize, usize) {
    let steps = series.demand.len();
    let week = ((7 * 86_400) / series.step.max(1)) as usize;
    if steps <= week {
        return (0, steps);
    }
    let pools = series.pools.len();
    let public_at = |k: usize| -> u64 {
        (0..pools)
            .filter(|&p| series.public[p])
            .map(|p| u64::from(series.requested[k * pools + p]))
            .sum()
    };
    let mut sum: u64 = (0..week).map(public_at).sum();
    let (mut best, mut best_sum) = (0, sum);
    for start in 1..=steps - week {
        sum += public_at(start + week - 1);
        sum -= public_at(start - 1);
        if sum > best_sum {
            best = start;
            best_sum = sum;
        }
    }
    if best_sum == 0 {
        let peak = series
            .demand
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k);
        best = peak.saturating_sub(week / 2).min(steps - week);
    }
    (best, best + week)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area<'_>,
    series: &Series,
    from: usize,
    to: usize,
    caption: &str,
) -> Result<(), Box<dyn std::error::Error + 'static>> {
    let pools = series.pools.len();
    let span = to - from;
    let bucket = span.div_ceil(MAX_POINTS).max(1);
    let day = 86_400.0 / series.step as f64;
    // Pools that ever hold capacity: private ones at the bottom of the stack, public above.
    let mut order: Vec<usize> = (0..pools)
        .filter(|&p| (from..to).any(|k| series.ready[k * pools + p] > 0))
        .collect();
    // Within a cloud, the most used pool lowest: the order the planner fills them in.
    let used = |p: usize| -> u64 {
        (from..to)
            .map(|k| u64::from(series.ready[k * pools + p]))
            .sum()
    };
    order.sort_by_key(|&p| (series.public[p], std::cmp::Reverse(used(p))));
    // One column per bucket: the step with the highest demand in it.
    let mut xs = Vec::new();
    let mut demand = Vec::new();
    let mut stacks: Vec<Vec<f64>> = vec![Vec::new(); order.len()];
    let mut bursting = Vec::new();
    let mut k = from;
    while k < to {
        let end = (k + bucket).min(to);
        let at = (k..end)
            .max_by(|&a, &b| series.demand[a].total_cmp(&series.demand[b]))
            .unwrap_or(k);
        xs.push(k as f64 / day);
        demand.push(series.demand[at]);
        let mut cumulative = 0.0;
        for (i, &p) in order.iter().enumerate() {
            cumulative += f64::from(series.ready[at * pools + p]) * series.target_per_replica;
            stacks[i].push(cumulative);
        }
        bursting.push(
            (k..end).any(|s| {
                (0..pools).any(|p| series.public[p] && series.requested[s * pools + p] > 0)
            }),
        );
        k = end;
    }
    let x0 = from as f64 / day;
    let x1 = to as f64 / day;
    let top = demand
        .iter()
        .chain(stacks.last().into_iter().flatten())
        .fold(1.0f64, |m, &v| m.max(v))
        * 1.08;
    let start = series.start;
    let step = series.step;
    let label = move |x: &f64| {
        let t = start + (x * 86_400.0) as i64;
        let text = format_timestamp(t - t.rem_euclid(step));
        if x1 - x0 > 14.0 {
            text[..10].to_string()
        } else {
            text[5..16].to_string()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time (UTC)")
        .y_desc("requests per second")
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_labels(10)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    // Burst periods: light red behind everything, merged into runs.
    let width = bucket as f64 / day;
    let mut i = 0;
    let mut first_burst = true;
    while i < xs.len() {
        if !bursting[i] {
            i += 1;
            continue;
        }
        let j = (i..xs.len()).find(|&j| !bursting[j]).unwrap_or(xs.len());
        let rect = Rectangle::new(
            [(xs[i], 0.0), ((xs[j - 1] + width).min(x1), top)],
            RGBColor(215, 48, 39).mix(0.08).filled(),
        );
        let drawn = chart.draw_series(std::iter::once(rect))?;
        if first_burst {
            drawn
                .label("bursting (public replicas requested)")
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 6), (x + 18, y + 6)],
                        RGBColor(215, 48, 39).mix(0.15).filled(),
                    )
                });
            first_burst = false;
        }
        i = j;
    }
    // Stacked ready capacity, the highest layer first so lower layers paint over it.
    let (mut private_i, mut public_i) = (0, 0);
    let colours: Vec<RGBColor> = order
        .iter()
        .map(|&p| {
            if series.public[p] {
                public_i += 1;
                PUBLIC_COLOURS[(public_i - 1) % PUBLIC_COLOURS.len()]
            } else {
                private_i += 1;
                PRIVATE_COLOURS[(private_i - 1) % PRIVATE_COLOURS.len()]
            }
        })
        .collect();
    for i in (0..order.len()).rev() {
        let p = order[i];
        let colour = colours[i];
        let cloud = if series.public[p] {
            "public"
        } else {
            "private"
        };
        chart
            .draw_series(AreaSeries::new(
                xs.iter().copied().zip(stacks[i].iter().copied()),
                0.0,
                colour.mix(0.75),
            ))?
            .label(format!("ready capacity: {} ({cloud})", series.pools[p]))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], colour.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            xs.iter().copied().zip(demand.iter().copied()),
            BLACK.stroke_width(2),
        ))?
        .label("demand")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// The sweep's SVG: every variant's public spend against unmet demand (grey), the Pareto
/// frontier (blue line), the policy as given (red triangle) and the baselines (static threshold:
/// black square; oracle: green diamond; optimal lower bound: green cross). Unmet demand is in
/// percent on a linear axis.
pub fn render_frontier_svg(sweep: &super::sweep::Sweep, title: &str) -> Result<String, String> {
    render_frontier(sweep, title).map_err(|e| e.to_string())
}

fn render_frontier(
    sweep: &super::sweep::Sweep,
    title: &str,
) -> Result<String, Box<dyn std::error::Error + 'static>> {
    let point = |m: &super::RunMetrics| (m.public_cost, m.unmet_demand_fraction * 100.0);
    let mut all: Vec<(f64, f64)> = sweep.variants.iter().map(|v| point(&v.metrics)).collect();
    let marked = [
        ("current policy", point(&sweep.current)),
        ("static threshold", point(&sweep.static_threshold)),
        ("oracle (pays start-ups)", point(&sweep.oracle)),
        ("lower bound (no start-ups)", point(&sweep.lower_bound)),
    ];
    all.extend(marked.iter().map(|m| m.1));
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let x_max = all
        .iter()
        .map(|p| finite(p.0))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.08;
    let y_max = all
        .iter()
        .map(|p| finite(p.1))
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.08;
    let mut frontier: Vec<(f64, f64)> = sweep
        .variants
        .iter()
        .filter(|v| v.pareto)
        .map(|v| point(&v.metrics))
        .collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 700)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("public spend over the run")
            .y_desc("unmet demand (%)")
            .draw()?;
        chart
            .draw_series(
                sweep
                    .variants
                    .iter()
                    .filter(|v| !v.pareto)
                    .map(|v| Circle::new(point(&v.metrics), 3, RGBColor(170, 170, 170).filled())),
            )?
            .label("variant")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, RGBColor(170, 170, 170).filled()));
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(LineSeries::new(
                frontier.iter().copied(),
                blue.stroke_width(2),
            ))?
            .label("Pareto frontier")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
        chart.draw_series(frontier.iter().map(|&p| Circle::new(p, 4, blue.filled())))?;
        let red = RGBColor(215, 48, 39);
        let green = RGBColor(46, 139, 87);
        chart
            .draw_series(std::iter::once(TriangleMarker::new(
                marked[0].1,
                9,
                red.filled(),
            )))?
            .label(marked[0].0)
            .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, red.filled()));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (marked[1].1.0 - x_max * 0.006, marked[1].1.1 - y_max * 0.008),
                    (marked[1].1.0 + x_max * 0.006, marked[1].1.1 + y_max * 0.008),
                ],
                BLACK.filled(),
            )))?
            .label(marked[1].0)
            .legend(|(x, y)| Rectangle::new([(x + 5, y - 5), (x + 15, y + 5)], BLACK.filled()));
        chart
            .draw_series(std::iter::once(Circle::new(marked[2].1, 7, green.filled())))?
            .label(marked[2].0)
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, green.filled()));
        chart
            .draw_series(std::iter::once(Cross::new(
                marked[3].1,
                8,
                green.stroke_width(3),
            )))?
            .label(marked[3].0)
            .legend(move |(x, y)| Cross::new((x + 10, y), 6, green.stroke_width(3)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}
