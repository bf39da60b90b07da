package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's Chromium; make test installs it when missing.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium to check the review page in: make test installs it (apt-get install chromium)")
	return ""
}

// The review page in a real headless Chromium: it loads without a console
// error or an exception, the chart has its axes and a marker per incident
// above the bars, the comparison with the baseline is there, and the rule
// filter hides a rule's rows and markers. A screenshot is saved in the
// test's artifact directory (go test -artifacts keeps it).
func TestTheReviewPageInARealBrowser(t *testing.T) {
	page := filepath.Join(t.TempDir(), "review.html")
	def, err := os.ReadFile("../../rules/examples/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	stricter := write(t, "stricter.yaml", strings.Replace(string(def), "threshold: 5                    #", "threshold: 3                    #", 1))
	if _, _, err := runCLI(t, nil, "replay", "--rules", stricter, "--baseline", "../../rules/examples/default.yaml", "--report", page, "../../rules/examples/attack.log"); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, time.Minute)
	defer cancelTimeout()
	messages := chromedp.Console(ctx) // from before the page loads
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	shown := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`[...document.querySelectorAll(%q)].filter(e => e.getClientRects().length > 0).length`, sel)))
		must(err)
		return n
	}
	must(chromedp.Do(ctx, chromedp.Navigate("file://"+page), chromedp.WaitVisible(chromedp.CSS("svg"))))
	markers, lanes := shown("svg circle.block"), shown("svg g[data-rule]")
	xTicks, yTicks := shown("svg text.tick[text-anchor=middle]"), shown("svg text.tick[text-anchor=end]")
	rows := shown(`tr[data-rule="failed-login-burst"]`)
	comparison, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h2 + p")))
	must(err)
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must(err)
	must(chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`input[data-filter="failed-login-burst"]`))))
	rowsAfter, markersAfter := shown(`tr[data-rule="failed-login-burst"]`), shown("svg circle.block")
	// The console keeps its order: a last message says all were read.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[any](`console.log("end of the test")`))
	must(err)
	var problems []string
	for m, err := range messages {
		must(err)
		if m.Text == "end of the test" {
			break
		}
		if m.IsException() || m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning {
			problems = append(problems, m.String())
		}
	}
	shotPath := filepath.Join(t.ArtifactDir(), "review.png")
	must(os.WriteFile(shotPath, shot, 0o644))
	t.Logf("screenshot: %s (%d bytes)", shotPath, len(shot))
	if len(problems) > 0 {
		t.Errorf("the page logged: %v", problems)
	}
	if markers != 2 || lanes != 1 || xTicks < 2 || yTicks < 2 {
		t.Errorf("chart: %d block markers (want its two incidents), %d lanes, %d time ticks, %d count ticks", markers, lanes, xTicks, yTicks)
	}
	// SEC-010 at 3 blocks 203.0.113.7 earlier than at 5, and 192.0.2.44
	// (3 failures) at all.
	if rows < 2 || !strings.Contains(comparison, "failed-login-burst: blocked earlier 1 · failed-login-burst: blocked only by the new rules 1") {
		t.Errorf("%d failed-login-burst rows; the comparison says %q", rows, comparison)
	}
	if rowsAfter != 0 || markersAfter != 0 {
		t.Errorf("after filtering failed-login-burst out: %d rows and %d markers still shown", rowsAfter, markersAfter)
	}
}
