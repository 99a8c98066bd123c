package bench

import (
	"fmt"
	"image/color"
	"io"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteChart draws the report as a PNG: one row per workload, throughput
// (left) and p99 latency (right) against concurrency, txcoord (one line per
// acknowledgement mode) against the baseline and, when measured, the floor
// (the adapters without a coordinator). Points are the medians of the
// rounds.
func (r *Report) WriteChart(w io.Writer) error {
	var workloads []string
	for _, x := range r.Results {
		if !slices.Contains(workloads, x.Workload) {
			workloads = append(workloads, x.Workload)
		}
	}
	if len(workloads) == 0 {
		return fmt.Errorf("chart: no results")
	}
	var ticks plot.ConstantTicks
	for _, c := range r.Settings.Concurrency {
		ticks = append(ticks, plot.Tick{Value: float64(c), Label: strconv.Itoa(c)})
	}
	colors := map[string]color.Color{
		"baseline":               color.RGBA{R: 120, G: 120, B: 120, A: 255},
		"txcoord":                color.RGBA{R: 31, G: 119, B: 180, A: 255},
		"txcoord ack=decision":   color.RGBA{R: 214, G: 39, B: 40, A: 255},
		"floor (no coordinator)": color.RGBA{R: 44, G: 160, B: 44, A: 255},
	}
	rows := make([][]*plot.Plot, len(workloads))
	for i, wl := range workloads {
		tps, p99 := plot.New(), plot.New()
		tps.Title.Text = wl + ": throughput"
		tps.Y.Label.Text = "transactions/s"
		p99.Title.Text = wl + ": p99 latency"
		p99.Y.Label.Text = "ms"
		for _, p := range []*plot.Plot{tps, p99} {
			p.X.Label.Text = "concurrency"
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = ticks
			p.Y.Min = 0
			p.Legend.Top = true
			p.Legend.Left = true
			p.Add(plotter.NewGrid())
		}
		series := map[string][2]plotter.XYs{}
		var order []string
		add := func(name string, c int, s Stats) {
			if _, ok := series[name]; !ok {
				order = append(order, name)
			}
			v := series[name]
			v[0] = append(v[0], plotter.XY{X: float64(c), Y: s.TPS})
			v[1] = append(v[1], plotter.XY{X: float64(c), Y: s.P99Ms})
			series[name] = v
		}
		baseDone, floorDone := map[int]bool{}, map[int]bool{}
		for _, x := range r.Results {
			if x.Workload != wl {
				continue
			}
			name := "txcoord"
			if x.Ack == AckDecision {
				name = "txcoord ack=decision"
			}
			add(name, x.Concurrency, x.Txcoord)
			if x.Baseline != nil && !baseDone[x.Concurrency] {
				baseDone[x.Concurrency] = true
				add("baseline", x.Concurrency, *x.Baseline)
			}
			if x.Floor != nil && !floorDone[x.Concurrency] {
				floorDone[x.Concurrency] = true
				add("floor (no coordinator)", x.Concurrency, *x.Floor)
			}
		}
		for _, name := range order {
			for k, p := range []*plot.Plot{tps, p99} {
				pts := series[name][k]
				slices.SortFunc(pts, func(a, b plotter.XY) int { return int(a.X - b.X) })
				l, s, err := plotter.NewLinePoints(pts)
				if err != nil {
					return fmt.Errorf("chart %s %s: %w", wl, name, err)
				}
				c := colors[name]
				l.Color, s.Color = c, c
				l.Width = vg.Points(1.5)
				switch name {
				case "baseline":
					l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				case "floor (no coordinator)":
					l.Dashes = []vg.Length{vg.Points(1.5), vg.Points(2)}
				}
				p.Add(l, s)
				p.Legend.Add(name, l, s)
			}
		}
		rows[i] = []*plot.Plot{tps, p99}
	}
	const colW, rowH = 6 * vg.Inch, 3.2 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(2*colW, vg.Length(len(workloads))*rowH), vgimg.UseDPI(96))
	dc := draw.New(img)
	t := draw.Tiles{Rows: len(workloads), Cols: 2, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(rows, t, dc)
	for i := range rows {
		for j := range rows[i] {
			rows[i][j].Draw(canvases[i][j])
		}
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}
