package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/authguard/authguard/cmd/internal/redisflag"
)

type accountsCmd struct {
	List      accountsListCmd      `cmd:"" help:"List the protected accounts (account_protect:<user>)."`
	Unprotect accountsUnprotectCmd `cmd:"" help:"Lift the protection of accounts (recorded as evidence)."`
}

type accountsListCmd struct {
	redisflag.Flags `embed:""`
	outputFlag
}

type listedAccount struct {
	Account   string `json:"account"`
	ExpiresAt string `json:"expires_at,omitempty"`
	ExpiresIn int64  `json:"expires_in_seconds"`
}

func (c *accountsListCmd) Run(ctx context.Context, e *env) error {
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	ps, err := store.Protected(ctx)
	if err != nil {
		return err
	}
	rows := make([]listedAccount, 0, len(ps))
	for _, p := range ps {
		a := listedAccount{Account: p.Account, ExpiresIn: -1}
		if !p.Expires.IsZero() {
			a.ExpiresAt, a.ExpiresIn = p.Expires.UTC().Format(time.RFC3339), int64(time.Until(p.Expires).Seconds())
		}
		rows = append(rows, a)
	}
	return list(c.outputFlag, e.stdout, rows, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "ACCOUNT\tEXPIRES")
		for _, a := range rows {
			exp := "never"
			if a.ExpiresAt != "" {
				exp = a.ExpiresAt
			}
			fmt.Fprintf(tw, "%s\t%s\n", a.Account, exp)
		}
	})
}

type accountsUnprotectCmd struct {
	redisflag.Flags `embed:""`
	operatorFlags
	Accounts []string `arg:"" name:"account" help:"Usernames whose protection to lift."`
}

func (c *accountsUnprotectCmd) Run(ctx context.Context, e *env) error {
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	for _, user := range c.Accounts {
		was, err := store.Unprotect(ctx, user, c.who(), c.Reason, time.Now())
		if err != nil {
			return err
		}
		if was {
			fmt.Fprintf(e.stdout, "%s unprotected: logins from any address reach it again\n", user)
		} else {
			fmt.Fprintf(e.stdout, "%s was not protected; recorded anyway\n", user)
		}
	}
	return nil
}
