// Passkeys (WebAuthn): the browser's half of the two ceremonies, adding one in "Connexion et sécurité" and
// logging in with one. The server checks everything (py_webauthn); this file only carries the messages.
// Without JavaScript or WebAuthn the forms stay hidden and the password + SMS code login is unchanged.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !window.fetch) { return; }
  var status = document.getElementById("passkey-status");

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(raw, function (c) { return c.charCodeAt(0); }).buffer;
  }
  function toText(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    bytes.forEach(function (b) { raw += String.fromCharCode(b); });
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creation(options) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) { return PublicKeyCredential.parseCreationOptionsFromJSON(options); }
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    (options.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return options;
  }
  function request(options) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) { return PublicKeyCredential.parseRequestOptionsFromJSON(options); }
    options.challenge = toBytes(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return options;
  }
  function asJSON(credential) {
    if (credential.toJSON) { return credential.toJSON(); }
    var r = credential.response, out = {id: credential.id, rawId: toText(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment, clientExtensionResults: {}, response: {
        clientDataJSON: toText(r.clientDataJSON)}};
    if (r.attestationObject) { out.response.attestationObject = toText(r.attestationObject); }
    if (r.authenticatorData) {
      out.response.authenticatorData = toText(r.authenticatorData);
      out.response.signature = toText(r.signature);
      if (r.userHandle) { out.response.userHandle = toText(r.userHandle); }
    }
    return out;
  }
  function post(url, fields) {
    return fetch(url, {method: "POST", credentials: "same-origin", body: new URLSearchParams(fields)})
      .then(function (response) { return response.json(); });
  }
  function say(text) { if (status) { status.textContent = text; } }
  function failed(error) {
    say(error && error.name === "NotAllowedError" ? "Opération annulée ou refusée par l’appareil."
        : "La clé d’accès n’a pas fonctionné. Réessayez, ou connectez-vous avec le mot de passe et le code SMS.");
  }
  function follow(answer) {
    if (answer.redirect) { window.location.assign(answer.redirect); } else { say(answer.error || "Erreur."); }
  }

  var add = document.getElementById("passkey-add");
  if (add) {
    add.hidden = false;
    document.querySelectorAll(".passkey-needs-js").forEach(function (note) { note.hidden = true; });
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      var csrf = add.getAttribute("data-csrf");
      say("Suivez les instructions de votre appareil…");
      post("/profile/acces/passkeys/options", {csrf: csrf}).then(function (options) {
        if (options.error) { throw {message: options.error}; }
        return navigator.credentials.create({publicKey: creation(options)});
      }).then(function (credential) {
        return post("/profile/acces/passkeys", {csrf: csrf, credential: JSON.stringify(asJSON(credential)),
                                                name: document.getElementById("passkey-name").value});
      }).then(follow, function (error) { if (error && error.message && !error.name) { say(error.message); } else { failed(error); } });
    });
  }

  var login = document.getElementById("passkey-login");
  if (login) {
    login.hidden = false;
    login.addEventListener("submit", function (event) {
      event.preventDefault();
      var csrf = login.getAttribute("data-csrf");
      say("Suivez les instructions de votre appareil…");
      post("/login/passkey/options", {csrf: csrf}).then(function (options) {
        return navigator.credentials.get({publicKey: request(options)});
      }).then(function (credential) {
        return post("/login/passkey", {csrf: csrf, credential: JSON.stringify(asJSON(credential))});
      }).then(follow, failed);
    });
  }
}());
