//! The report of a run, written to `chaos-report/<UTC time>/`: `report.json` (every figure),
//! `report.md` (a table per fault and the safety verdict) and `availability.png` (success rate
//! and latency over time, fault windows shaded).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::checker::availability::{Bucket, FaultFigures, KindFigures, Ratio};
use crate::checker::Safety;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub profile: String,
    pub duration_s: f64,
    pub started_utc: String,
    pub staleness_bound_ms: u64,
    /// The stated revocation bound: no node accepts a revoked credential in a request sent this
    /// long after the acknowledgement.
    pub revocation_bound_ms: u64,
    pub faults: Vec<FaultFigures>,
    /// The faults grouped by kind: medians and maxima of the unavailability windows.
    pub by_kind: Vec<KindFigures>,
    pub availability: BTreeMap<&'static str, Ratio>,
    /// Analyses through the load balancer that ended with a report, retries with the same key
    /// included (what an integrator following the IFU sees).
    pub analyses_with_retries: Ratio,
    pub overall: Ratio,
    pub safety: Safety,
    /// Operations the linearizability checker examined.
    pub register_operations: usize,
    pub operations: usize,
    /// Liveness: faults after which the cluster did not heal within 10 s.
    pub unhealed_faults: usize,
    /// Elections during faults that spared the leader.
    pub unexpected_elections: u64,
    pub timeline: Vec<Bucket>,
    pub verdict: String,
    pub reasons: Vec<String>,
}

impl Report {
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        self.plot(&dir.join("availability.png")).context("drawing availability.png")?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let mut md = format!(
            "# Chaos run {}\n\nProfile `{}`, seed `{}` (replay: `make chaos PROFILE={} SEED={}`), {:.0} s, started {}.\n\n**Verdict: {}**{}\n\n",
            self.started_utc,
            self.profile,
            self.seed,
            self.profile,
            self.seed,
            self.duration_s,
            self.started_utc,
            self.verdict,
            if self.reasons.is_empty() { String::new() } else { format!(" ({})", self.reasons.join("; ")) }
        );
        md.push_str("## Safety\n\n| property | value |\n| --- | ---: |\n");
        let s = &self.safety;
        for (name, v) in [
            ("lost acknowledged writes", s.lost_acknowledged_writes as u64),
            ("refused writes present", s.refused_writes_present as u64),
            ("duplicate reports", s.duplicate_reports as u64),
            ("lost reports", s.lost_reports as u64),
            ("stored images not served by some node", s.unreadable_images as u64),
            ("late revocations", s.late_revocations as u64),
            ("max revocation delay (ms)", s.max_revocation_delay_ms),
            ("revocations not in force after healing", s.revocations_not_in_force as u64),
            ("linearizability violations", s.linearizability_violations as u64),
            ("terms with two leaders", s.multiple_leaders_in_a_term as u64),
            ("cut-off nodes serving past the bound", s.fail_open as u64),
            ("panics in node logs", s.panics as u64),
        ] {
            md.push_str(&format!("| {name} | {v} |\n"));
        }
        md.push_str(&format!(
            "\nRevocation bound stated: {} ms after the acknowledgement (staleness bound {} ms). Register operations checked: {}.\n",
            self.revocation_bound_ms, self.staleness_bound_ms, self.register_operations
        ));
        md.push_str("\n## Availability\n\n| class | ok | total | ratio |\n| --- | ---: | ---: | ---: |\n");
        for (class, r) in &self.availability {
            md.push_str(&format!("| {class} | {} | {} | {:.4} |\n", r.ok, r.total, r.ratio));
        }
        let a = &self.analyses_with_retries;
        md.push_str(&format!(
            "| analyses through the load balancer, same-key retries included | {} | {} | {:.4} |\n| all operations | {} | {} | {:.4} |\n",
            a.ok, a.total, a.ratio, self.overall.ok, self.overall.total, self.overall.ratio
        ));
        md.push_str("\n## Faults\n\n| # | fault | target | start s | end s | healed after ms | pMax write ms | pMax analysis ms | elections | served after cut ms |\n| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (i, f) in self.faults.iter().enumerate() {
            md.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {}{} | {} |\n",
                i + 1,
                f.kind,
                f.target,
                f.start_s,
                f.end_s,
                f.healed_s.map_or("not healed".into(), |h| format!("{:.0}", (h - f.end_s) * 1000.0)),
                f.pmax_write_unavailable_ms,
                f.pmax_analysis_unavailable_ms,
                f.elections,
                if f.unexpected_elections > 0 { " (unexpected)" } else { "" },
                f.served_after_cut_ms.map_or("".into(), |v| v.to_string()),
            ));
        }
        md.push_str("\n### By kind\n\n| fault | count | pMax write median / max ms | pMax analysis median / max ms | elections |\n| --- | ---: | ---: | ---: | ---: |\n");
        for k in &self.by_kind {
            md.push_str(&format!(
                "| {} | {} | {} / {} | {} / {} | {} |\n",
                k.kind,
                k.count,
                k.pmax_write_median_ms,
                k.pmax_write_max_ms,
                k.pmax_analysis_median_ms,
                k.pmax_analysis_max_ms,
                k.elections
            ));
        }
        md.push_str("\n### What each fault did\n\n");
        for (i, f) in self.faults.iter().enumerate() {
            md.push_str(&format!("{}. **{}** on {}: {}\n", i + 1, f.kind, f.target, f.detail));
        }
        if !s.findings.is_empty() {
            md.push_str("\n## Findings\n\n");
            for line in &s.findings {
                md.push_str(&format!("- {line}\n"));
            }
        }
        md
    }

    /// Success rate per class (top) and latency (bottom) per second, fault windows shaded.
    fn plot(&self, path: &Path) -> anyhow::Result<()> {
        load_font()?;
        let root = BitMapBackend::new(path, (1400, 800)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(460);
        let end = self.duration_s.max(1.0);
        let mut rate = ChartBuilder::on(&top)
            .caption(format!("success rate per second ({} seed {})", self.profile, self.seed), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..1.05)?;
        rate.configure_mesh().x_desc("time (s)").y_desc("ok / attempts").draw()?;
        self.shade_faults(&mut rate, 1.05)?;
        let colours = [BLUE, RED, GREEN, MAGENTA, BLACK];
        for (i, class) in ["analysis", "write", "token", "revocation", "read"].into_iter().enumerate() {
            let points: Vec<(f64, f64)> = self
                .timeline
                .iter()
                .filter_map(|b| b.classes.get(class).filter(|r| r.total > 0).map(|r| (b.t_s as f64 + 0.5, r.ratio)))
                .collect();
            let colour = colours[i];
            rate.draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(class)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        rate.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        let max_p99 = self.timeline.iter().map(|b| b.p99_ms).fold(10.0, f64::max);
        let mut lat = ChartBuilder::on(&bottom)
            .caption("latency of successful operations (ms)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..max_p99 * 1.1)?;
        lat.configure_mesh().x_desc("time (s)").y_desc("ms").draw()?;
        self.shade_faults(&mut lat, max_p99 * 1.1)?;
        for (name, colour, pick) in [("p50", BLUE, 0), ("p99", RED, 1)] {
            let points: Vec<(f64, f64)> = self
                .timeline
                .iter()
                .map(|b| (b.t_s as f64 + 0.5, if pick == 0 { b.p50_ms } else { b.p99_ms }))
                .collect();
            lat.draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        lat.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    }

    fn shade_faults<DB: DrawingBackend>(
        &self,
        chart: &mut ChartContext<
            '_,
            DB,
            Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
        >,
        top: f64,
    ) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        for f in &self.faults {
            let healed = f.healed_s.unwrap_or(f.end_s);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(f.start_s, 0.0), (healed, top)],
                    RGBColor(255, 200, 120).mix(0.35).filled(),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .draw_series(std::iter::once(Text::new(f.kind.clone(), (f.start_s, top * 0.97), ("sans-serif", 11))))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    }
}

/// plotters draws text with a font it is given: DejaVu Sans from Debian's fonts-dejavu-core.
fn load_font() -> anyhow::Result<()> {
    static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let path = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e} (install fonts-dejavu-core)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "invalid font".to_string())
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}
