package oidcdev

import (
	"html/template"
	"net/http"
)

// devicePage is where a person approves or denies a device login: type
// the user code (the link the client prints fills it in), pick a user.
// There is no password: this provider is for development on loopback.
type devicePage struct{ p *Provider }

var devicePageTmpl = template.Must(template.New("device").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>attestation OIDC (development): device login</title>
<style>body{font-family:sans-serif;max-width:34em;margin:3em auto}label{display:block;margin:1em 0}
input,select{font-size:1.2em}.ok{color:#075}.err{color:#a00}</style></head>
<body><h1>Device login</h1>
<p>Development provider: no passwords, anyone who reaches this page may log in as anyone.</p>
{{with .Message}}<p class="{{$.Class}}">{{.}}</p>{{end}}
<form method="post">
<label>Code shown by the command line <input name="user_code" value="{{.UserCode}}" autofocus required></label>
<label>Log in as <select name="username">{{range .Users}}
<option value="{{.Username}}">{{.Username}}: {{.Name}}{{with .Roles}} ({{range $i, $r := .}}{{if $i}}, {{end}}{{$r}}{{end}}){{end}}</option>{{end}}
</select></label>
<button name="action" value="approve">Approve</button> <button name="action" value="deny">Deny</button>
</form></body></html>
`))

type devicePageData struct {
	UserCode, Message, Class string
	Users                    []User
}

func (d *devicePage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	data := devicePageData{UserCode: r.FormValue("user_code"), Users: d.p.Users()}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		var err error
		if r.PostFormValue("action") == "deny" {
			err = d.p.Deny(data.UserCode)
			data.Message = "Denied. The command line says so at its next poll."
		} else {
			user := r.PostFormValue("username")
			err = d.p.Approve(data.UserCode, user)
			data.Message = "Approved: logged in as " + user + ". The command line continues at its next poll."
		}
		data.Class = "ok"
		if err != nil {
			data.Message, data.Class = err.Error(), "err"
			w.WriteHeader(http.StatusBadRequest)
		} else {
			data.UserCode = ""
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	devicePageTmpl.Execute(w, data)
}
