//! `--plot`: latency percentiles and throughput over time for each target, as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::stats::{Point, over_time};

pub struct Series {
    pub name: String,
    pub samples: Vec<(f32, f32, bool)>,
}

pub fn write_svg(path: &Path, series: &[Series], duration_s: f32) -> Result<(), String> {
    let interval = (duration_s / 60.0).clamp(0.1, 5.0);
    let points: Vec<(&str, Vec<Point>)> = series
        .iter()
        .map(|s| (s.name.as_str(), over_time(&s.samples, interval)))
        .collect();
    let all = || points.iter().flat_map(|(_, p)| p.iter());
    let x_max = all().map(|q| q.at).fold(duration_s, f32::max) + interval;
    let lat_max = all().map(|q| q.p99_ms).fold(0.1f32, f32::max) * 1.1;
    let rps_max = all().map(|q| q.requests_per_s).fold(1.0f32, f32::max) * 1.1;

    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| format!("cannot draw {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(420);
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];

    let mut lat = ChartBuilder::on(&top)
        .caption(
            "latency over time (solid p50, dashed p99)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f32..x_max, 0f32..lat_max)
        .map_err(err)?;
    lat.configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    for (i, (name, p)) in points.iter().enumerate() {
        let color = palette[i % palette.len()];
        lat.draw_series(LineSeries::new(
            p.iter().map(|q| (q.at, q.p50_ms)),
            color.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("{name} p50"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        lat.draw_series(DashedLineSeries::new(
            p.iter().map(|q| (q.at, q.p99_ms)),
            6,
            4,
            color.stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("{name} p99"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    lat.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;

    let mut thr = ChartBuilder::on(&bottom)
        .caption("throughput over time", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f32..x_max, 0f32..rps_max)
        .map_err(err)?;
    thr.configure_mesh()
        .x_desc("seconds")
        .y_desc("requests/s")
        .draw()
        .map_err(err)?;
    for (i, (name, p)) in points.iter().enumerate() {
        let color = palette[i % palette.len()];
        thr.draw_series(LineSeries::new(
            p.iter().map(|q| (q.at, q.requests_per_s)),
            color.stroke_width(2),
        ))
        .map_err(err)?
        .label(name.to_string())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    thr.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
