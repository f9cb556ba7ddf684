//! The per-step series as CSV: one row per step, ready and requested replicas per pool.

use super::replay::Series;
use super::trace::format_timestamp;

/// CSV text: `timestamp,demand,capacity,ready_<pool>...,requested_<pool>...,public_requested`.
pub fn series_csv(series: &Series) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let pools = series.pools.len();
    let mut header = vec![
        "timestamp".to_string(),
        "demand".to_string(),
        "ready_capacity".to_string(),
    ];
    header.extend(series.pools.iter().map(|p| format!("ready_{p}")));
    header.extend(series.pools.iter().map(|p| format!("requested_{p}")));
    header.push("public_requested".into());
    writer.write_record(&header)?;
    for (k, d) in series.demand.iter().enumerate() {
        let ready = &series.ready[k * pools..(k + 1) * pools];
        let requested = &series.requested[k * pools..(k + 1) * pools];
        let capacity: u32 = ready.iter().sum();
        let public: u32 = requested
            .iter()
            .zip(&series.public)
            .filter(|&(_, &p)| p)
            .map(|(&n, _)| n)
            .sum();
        let mut row = vec![
            format_timestamp(series.start + k as i64 * series.step),
            format!("{d:.3}"),
            format!("{:.3}", f64::from(capacity) * series.target_per_replica),
        ];
        row.extend(ready.iter().map(u32::to_string));
        row.extend(requested.iter().map(u32::to_string));
        row.push(public.to_string());
        writer.write_record(&row)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8"))
}
