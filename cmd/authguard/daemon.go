package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/authguard/authguard/cmd/internal/cliconfig"
	"github.com/authguard/authguard/cmd/internal/gomem"
	"github.com/authguard/authguard/cmd/internal/leader"
	"github.com/authguard/authguard/cmd/internal/logflag"
	"github.com/authguard/authguard/cmd/internal/lokiflag"
	"github.com/authguard/authguard/cmd/internal/redisflag"
	"github.com/authguard/authguard/cmd/internal/serve"
	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/redisblock"
	"github.com/authguard/authguard/responder/slack"
)

type runCmd struct {
	Rules string `help:"Rules file (YAML). Empty: the embedded default rules (runbook SEC-010)." placeholder:"FILE"`

	LokiURL                  string        `group:"Loki" help:"Loki base URL, e.g. http://loki:3100. Without it authguard only takes pushes on --push-listen." placeholder:"URL"`
	LokiQuery                string        `group:"Loki" help:"LogQL query selecting the audit events. Loki is sent its stream selector and line filters; authguard checks | json and label filters itself (Loki's tail loses entries with them)." default:"${loki_query}"`
	LokiDelayFor             int           `group:"Loki" help:"Seconds Loki holds lines back before tailing them (0-5)." default:"0"`
	LokiBackfillMax          time.Duration `group:"Loki" help:"At start, re-read Loki as far back as the longest rule window, but no further than this (0: no backfill)." default:"24h"`
	LokiDedupWindow          time.Duration `group:"Loki" help:"How far back repeats are recognised and gaps are re-read after a reconnect." default:"1m"`
	LokiSettle               time.Duration `group:"Loki" help:"How long a new tail runs before the catch-up query behind it (Loki registers tails on its ingesters asynchronously)." default:"2s"`
	LokiSweepInterval        time.Duration `group:"Loki" help:"How often the sweeper re-reads the recent past with query_range behind the live tail, and how often the reader polls when it reads by query_range alone." default:"1s"`
	LokiSweepDelay           time.Duration `group:"Loki" help:"How long after its timestamp an entry is expected to be in Loki (shipper batching); sweeps read up to now minus this." default:"2s"`
	LokiTailMaxRate          int           `group:"Loki" help:"Entries per second above which the reader stops tailing and polls query_range alone (a Loki tail carries about 2,000/s)." default:"1500"`
	lokiflag.Loki            `group:"Loki" embed:""`
	LokiMaxLag               time.Duration `group:"Loki" help:"/readyz fails when the reader is known complete only up to longer ago than this." default:"30s"`
	PushMaxBytes             int64         `group:"Push receiver" help:"Largest push request body accepted on /loki/api/v1/push." default:"10485760"`
	PushBearerTokenFile      string        `group:"Push receiver" help:"File of the bearer tokens (one a line; several while rotating) a push to /loki/api/v1/push must carry; re-read when it changes. Without it, or --push-allow-unauthenticated, every push is refused." placeholder:"FILE"`
	AuditVerifyKeyFile       []string      `group:"Push receiver" help:"Count only audit lines signed (their sig field) with one of these keys, as the gateway's --audit-signing-key-file signs them; give two while rotating. Unsigned and forged lines are skipped and counted." placeholder:"FILE,..."`
	PushBasicAuthFile        string        `group:"Push receiver" help:"File of \"USER:PASSWORD\" lines (several while rotating) whose basic auth the push receiver takes as well as, or instead of, bearer tokens; re-read when it changes." placeholder:"FILE"`
	PushTLSCertFile          string        `group:"Push receiver" name:"push-tls-cert-file" help:"Serve the push receiver over HTTPS with this certificate (re-read when it changes)." placeholder:"FILE"`
	PushTLSKeyFile           string        `group:"Push receiver" name:"push-tls-key-file" help:"Key of --push-tls-cert-file." placeholder:"FILE"`
	PushTLSClientCAFile      string        `group:"Push receiver" name:"push-tls-client-ca-file" help:"Mutual TLS on the push receiver: a client must present a certificate these CAs signed, which then authenticates its pushes." placeholder:"FILE"`
	PushTenant               string        `group:"Push receiver" help:"When set, a push must name this tenant in X-Scope-OrgID (as Loki's multi-tenant push does), or it is refused with 401." placeholder:"ID"`
	PushAllowUnauthenticated bool          `group:"Push receiver" help:"Take pushes without a token (only where nothing else can reach --push-listen: anyone who can push can have any address blocked)."`

	redisflag.Flags `group:"Redis" embed:""`
	serve.Limits    `group:"Listeners" embed:""`
	DryRun          bool     `group:"Blocks and evidence" help:"Decide, record and page, but write no block."`
	NeverBlock      []string `group:"Blocks and evidence" help:"CIDRs never blocked whatever the rules say (e.g. the gateways' own proxies)." placeholder:"CIDR,..."`
	EvidenceMaxLen  int64    `group:"Blocks and evidence" help:"Approximate length bound of the evidence stream in Redis." default:"100000"`

	CheckpointInterval time.Duration `group:"Blocks and evidence" help:"How often the detector's windows are saved to Redis (and on SIGTERM), to count on from them after a restart (0: never saved nor loaded)." default:"10s"`

	SlackTokenFile         string            `group:"Slack" help:"File holding the Slack bot token (bot-token mode)." placeholder:"FILE"`
	SlackChannel           string            `group:"Slack" help:"Slack channel for incident pages (bot-token mode)." placeholder:"CHANNEL"`
	SlackWebhookURLFile    string            `group:"Slack" help:"File holding a Slack incoming-webhook URL (fallback mode)." placeholder:"FILE"`
	SlackAPIURL            string            `group:"Slack" name:"slack-api-url" help:"Slack API base URL (for testing)." hidden:""`
	SlackRoute             map[string]string `group:"Slack" help:"Channel per severity (bot-token mode); others go to --slack-channel." placeholder:"P1=#incidents;P3=#security-log"`
	SlackMention           map[string]string `group:"Slack" help:"Text put before new pages of a severity." default:"P1=<!here>" placeholder:"SEV=TEXT;..."`
	SlackCoalesce          time.Duration     `group:"Slack" help:"How long pages wait for others; 3 or more new incidents of one rule in that time become one summary (0: no waiting)." default:"2s"`
	SlackMaskUsernames     bool              `group:"Slack" help:"Hide usernames in the log lines shown on pages."`
	SlackRefresh           time.Duration     `group:"Slack" help:"How often pages of open incidents are redrawn with the attempts that came since (0: never)." default:"1m"`
	SlackSigningSecretFile string            `group:"Slack" help:"File holding the Slack app's signing secret: adds Unblock and Extend buttons, served on POST /slack/interactions at --listen." placeholder:"FILE"`
	GrafanaURL             string            `group:"Slack" help:"Grafana base URL: pages link each incident's lines in Explore." placeholder:"URL"`
	GrafanaLokiDatasource  string            `group:"Slack" help:"UID of the Loki data source in Grafana, for the Explore link." placeholder:"UID"`

	LeaderElect              bool          `group:"Leader election" help:"Run as one of several replicas: only the holder of a coordination.k8s.io Lease reads Loki, writes blocks and pages; the others stand by, ready, and take over with a backfill."`
	LeaderElectNamespace     string        `group:"Leader election" help:"Namespace of the Lease (default: the pod's own)." placeholder:"NAMESPACE"`
	LeaderElectLeaseName     string        `group:"Leader election" help:"Name of the Lease." default:"authguard"`
	LeaderElectIdentity      string        `group:"Leader election" help:"This replica's name in the Lease (default: POD_NAME, else the host name)." placeholder:"NAME"`
	LeaderElectLeaseDuration time.Duration `group:"Leader election" help:"How long a Lease not renewed keeps its holder: the longest a dead leader leaves the others waiting." default:"15s"`
	LeaderElectRenewDeadline time.Duration `group:"Leader election" help:"How long the leader tries to renew before it steps down (shorter than the lease duration)." default:"10s"`
	LeaderElectRetryPeriod   time.Duration `group:"Leader election" help:"How often standbys try to take the Lease and the leader renews it: a stopped leader's Lease changes hands within 2.2 of these (client-go jitters each try)." default:"500ms"`
	Kubeconfig               string        `group:"Leader election" help:"kubeconfig for leader election from outside a cluster (default: the in-cluster service account)." placeholder:"FILE"`

	Listen           string          `group:"Listeners" help:"Address for /metrics, /healthz and /readyz." default:":9090"`
	PushListen       string          `group:"Push receiver" help:"Address of the push receiver (POST /loki/api/v1/push), for gateways and log shippers; off unless set." placeholder:"ADDR"`
	SlackListen      string          `group:"Slack" help:"Address for Slack's interactions (POST /slack/interactions), the one endpoint to expose publicly; needed for the buttons of --slack-signing-secret-file." placeholder:"ADDR"`
	EnableLifecycle  bool            `group:"Listeners" help:"Serve POST /-/reload on --listen (off: rules reload on SIGHUP and when the file changes), as Prometheus's --web.enable-lifecycle."`
	AuditFields      []string        `group:"Audit lines" help:"Audit fields read from each line beyond action, client_ip, username and ts, for rules to group by or count (the fields the rules name are read too)." default:"${audit_fields}" placeholder:"FIELD,..."`
	MaxLineBytes     int             `group:"Audit lines" help:"Longest excerpt of a line kept with an event for evidence and pages; lines are read whole for their fields up to --max-line-hard-bytes." default:"16384"`
	MaxLineHardBytes int             `group:"Audit lines" help:"Longest audit line read at all; longer lines are counted as too_long and skipped, logged with their client_ip." default:"1048576"`
	UseLineTime      bool            `group:"Audit lines" help:"Take event time from the line's ts field instead of the Loki entry timestamp."`
	CheckConfig      cliconfig.Check `help:"Validate the settings, rules and secrets, print the result and where each setting came from, and exit; nothing is contacted, but with --check-config=online Redis, Loki, Slack and (with --leader-elect) the Kubernetes API are reached too, and one that does not answer exits 3."`

	budget      int64 // the detector's memory budget, from the Go memory limit (0: none)
	logflag.Log `group:"Logging" embed:""`
}

func (c *runCmd) Run(ctx context.Context, e *env, kctx *kong.Context) error {
	log, err := c.Logger(e.stderr)
	if err != nil {
		return err
	}
	c.budget = memoryBudget(gomem.Set(log))
	if c.CheckConfig != "" {
		return c.check(ctx, e, kctx)
	}
	d, err := c.build(ctx, log, e.stdout)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// daemon is a configured, not yet running authguard.
type daemon struct {
	log         *slog.Logger
	detect      *detector.Loop
	tail        *loki.Tail
	resp        *responder.Responder
	listener    net.Listener // admin
	pushLn      net.Listener // push receiver, nil when off
	slackLn     net.Listener // Slack's interactions, nil when off
	limits      serve.Limits
	lifecycle   bool // POST /-/reload is served
	registry    *prometheus.Registry
	store       *redisblock.Store
	neverBlock  []netip.Prefix // --never-block, refused by the rules and by Slack's Extend
	processed   prometheus.Counter
	stateLost   prometheus.Counter // times Redis was found to have lost its data
	reloader    *reloader
	checkpoints *checkpoints

	trackedKeys, evictions, late, future atomic.Uint64
	evictedBefore                        uint64              // evictions of engines replaced by reloads
	futureLogged                         time.Time           // when an event stamped ahead was last logged
	events                               chan detector.Event // from the tail and the push receiver
	receiver                             *loki.Receiver
	notifier                             *slack.Notifier
	signingSecret                        string
	close                                func()

	// elect is set when replicas elect a leader; leading says this one
	// runs the loop (always, without election).
	elect   *election
	leading atomic.Bool
	rules   string // the rules file, read again when a standby takes over
}

// election is how this replica takes part in leader election.
type election struct {
	client kubernetes.Interface
	cfg    leader.Config
}
