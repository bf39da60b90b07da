package main

import (
	"fmt"
	"html/template"
	"time"

	"github.com/authguard/authguard/detector"
)

// reportPage is the data of a replay's post-incident review page.
type reportPage struct {
	Generated     string
	Files         []string
	Events        int
	From, To      string
	Chart         *reportChart
	Rules         []string
	RuleCounts    []string
	Incidents     []pageIncident
	MoreIncidents int
	Offenders     []reportOffender
	Compared      bool
	Changes       []ruleChange
	ChangeCounts  []string
	MoreChanges   int
}

// pageIncident is an incident's row.
type pageIncident struct {
	Rule, Key, Action   string
	FirstText, LastText string
	Attempts, Renewals  int
	Severity            string // the most severe it reached
}

type reportOffender struct {
	IP        string
	Failures  int
	Usernames int
	First     string
	Last      string
}

// reportChart is the timeline: failed attempts per bucket of time as bars
// on time and count axes, and above the plot a lane per rule with a marker
// at each incident's start, so that decisions never cover the bars.
type reportChart struct {
	W, H, Left, Top, PlotW, PlotH, Bottom int
	TickEnd                               int    // where the time axis's ticks end
	Per                                   string // "minute", "5 minutes"
	Bars                                  []reportBar
	XTicks, YTicks                        []reportTick
	Lanes                                 []reportLane
}

type reportBar struct {
	X, Y, W, H int
	Label      string
}

type reportTick struct {
	At    int
	Label string
}

type reportLane struct {
	Rule  string
	Y     int
	Marks []reportMark
}

type reportMark struct {
	X, Y  int
	Class string
	N     int    // incidents starting at this spot
	Label string // the first of them
}

// Chart geometry, in pixels.
const (
	chartW, chartLeft, chartRight, plotH, laneH, axisH = 1050, 170, 16, 200, 16, 36
)

// bucketMinutes are the bucket sizes bars may take: the smallest that
// leaves each bar 3 pixels or more.
var bucketMinutes = []int64{1, 2, 5, 10, 15, 30, 60, 120, 360, 720, 1440, 10080}

// tickSteps are the spacings the time axis may take.
var tickSteps = []time.Duration{time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour,
	3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 28 * 24 * time.Hour}

func (r *reportData) chart() *reportChart {
	rules := r.rules()
	c := &reportChart{W: chartW, Left: chartLeft, PlotW: chartW - chartLeft - chartRight, PlotH: plotH, Top: 20 + laneH*len(rules)}
	c.Bottom = c.Top + c.PlotH
	c.TickEnd = c.Bottom + 5
	c.H = c.Bottom + axisH
	start := r.first.UTC().Truncate(time.Minute)
	minutes := int64(r.last.Sub(start)/time.Minute) + 1
	per := bucketMinutes[len(bucketMinutes)-1]
	for _, b := range bucketMinutes {
		if (minutes+b-1)/b*3 <= int64(c.PlotW) {
			per = b
			break
		}
	}
	c.Per = "minute"
	if per > 1 {
		c.Per = detector.FormatDuration(time.Duration(per) * time.Minute)
	}
	span := time.Duration((minutes+per-1)/per*per) * time.Minute
	x := func(t time.Time) int { return c.Left + int(float64(c.PlotW)*float64(t.Sub(start))/float64(span)) }
	buckets := map[int64]int{}
	peak := 0
	for m, n := range r.perMinute {
		b := (m - start.Unix()/60) / per
		buckets[b] += n
		peak = max(peak, buckets[b])
	}
	c.YTicks = countTicks(peak)
	top := max(peak, c.YTicks[len(c.YTicks)-1].At)
	y := func(n int) int { return c.Bottom - n*c.PlotH/max(top, 1) }
	for i := range c.YTicks {
		c.YTicks[i].At = y(c.YTicks[i].At)
	}
	bw := max(1, int(float64(c.PlotW)*float64(per)/float64(span/time.Minute))-1)
	for b, n := range buckets {
		at := start.Add(time.Duration(b*per) * time.Minute)
		c.Bars = append(c.Bars, reportBar{X: x(at), Y: y(n), W: bw, H: c.Bottom - y(n), Label: fmt.Sprintf("%s: %d failed", at.Format("2006-01-02 15:04"), n)})
	}
	c.XTicks = timeTicks(start, span, x)
	c.Lanes = r.lanes(rules, c, x)
	return c
}

// lanes put a marker per incident in its rule's lane; incidents that
// start in the same pixel column share one marker, which counts them.
func (r *reportData) lanes(rules []string, c *reportChart, x func(time.Time) int) []reportLane {
	index := map[string]int{}
	lanes := make([]reportLane, len(rules))
	for i, rule := range rules {
		index[rule] = i
		lanes[i] = reportLane{Rule: rule, Y: 8 + laneH*i + laneH/2}
	}
	type spot struct{ lane, x int }
	seen := map[spot]int{} // → its mark
	for _, in := range r.incidents.list {
		d := in.first
		l := index[d.Rule]
		s := spot{l, x(d.at)}
		if m, ok := seen[s]; ok {
			lanes[l].Marks[m].N++
			continue
		}
		class := "alert"
		if d.Action == string(detector.KindBlock) {
			class = "block"
		}
		seen[s] = len(lanes[l].Marks)
		lanes[l].Marks = append(lanes[l].Marks, reportMark{X: s.x, Y: lanes[l].Y, Class: class, N: 1,
			Label: fmt.Sprintf("%s %s %s, %d attempts, %s", stamp(d.at), d.Action, dash(d.Key), in.peak, in.severity)})
	}
	return lanes
}

// countTicks are 0 and round counts (1, 2, 5 times a power of ten apart)
// up to peak or just above: about four.
func countTicks(peak int) []reportTick {
	step := 1
	for i := 0; step*4 < peak; i++ {
		if i%3 == 1 {
			step = step / 2 * 5
		} else {
			step *= 2
		}
	}
	var ticks []reportTick
	for n := 0; ; n += step {
		ticks = append(ticks, reportTick{At: n, Label: fmt.Sprint(n)})
		if n >= peak {
			return ticks
		}
	}
}

// timeTicks are round times across the span, at most eight.
func timeTicks(start time.Time, span time.Duration, x func(time.Time) int) []reportTick {
	step := tickSteps[len(tickSteps)-1]
	for _, s := range tickSteps {
		if span/s <= 8 {
			step = s
			break
		}
	}
	layout := "15:04"
	if span > 24*time.Hour {
		layout = "Jan 2 15:04"
	}
	var ticks []reportTick
	for t := start.Truncate(step); !t.After(start.Add(span)); t = t.Add(step) {
		if t.Before(start) {
			continue
		}
		ticks = append(ticks, reportTick{At: x(t), Label: t.Format(layout)})
	}
	return ticks
}

var reportTemplate = template.Must(template.New("report").Parse(reportHTML))
