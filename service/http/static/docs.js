// The API key bar of /docs (Swagger UI) and /redoc. On a server with API keys the OpenAPI document
// itself needs the key, so it is sent with that fetch too, not only with "Try it out" calls. The
// key lives in sessionStorage: this tab only, shared with the playground at "/".
(function () {
  "use strict";
  const STORAGE = "vocos-api-key";
  const storedKey = () => sessionStorage.getItem(STORAGE) || "";

  function keyBar() {
    const form = document.createElement("form");
    form.className = "vocos-keybar";
    form.innerHTML =
      '<nav><a href="./">Playground</a><a href="docs">Swagger UI</a><a href="redoc">ReDoc</a></nav>' +
      '<label>API key <input type="password" name="key" autocomplete="off" ' +
      'placeholder="needed when the server has API keys"></label>' +
      '<button type="submit">Use key</button><button type="button" name="forget">Forget</button>' +
      '<span class="vocos-keybar-message" role="status"></span>';
    const input = form.elements.namedItem("key");
    const message = form.querySelector(".vocos-keybar-message");
    input.value = storedKey();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(STORAGE, input.value.trim());
      location.reload(); // fetch the document again, now with the key
    });
    form.elements.namedItem("forget").addEventListener("click", () => {
      sessionStorage.removeItem(STORAGE);
      location.reload();
    });
    document.body.insertBefore(form, document.body.firstChild);
    const say = (text, isError) => {
      message.textContent = text;
      message.classList.toggle("error", Boolean(isError));
    };
    say(storedKey() ? "Key in use (this tab only)." : "");
    return { say };
  }

  function refusal(status) {
    if (status !== 401) return "The API document could not be loaded (HTTP " + status + ").";
    return storedKey()
      ? "The server refused this API key (401): check it and press Use key."
      : "This server needs an API key: enter it and press Use key.";
  }

  // The page's own bootstrap script calls SwaggerUIBundle(config); wrap it to add the key to the
  // document's fetch, and to preauthorise the calls with it once the document (which declares the
  // bearer scheme) is in. "Authorize" then shows the key, and its Logout really logs out.
  function wrapSwaggerUI(bar) {
    const original = window.SwaggerUIBundle;
    let ui = null;
    const wrapped = function (config) {
      ui = original(Object.assign({}, config, {
        requestInterceptor: (request) => {
          if (request.loadSpec && storedKey()) {
            request.headers = Object.assign({}, request.headers, { Authorization: "Bearer " + storedKey() });
          }
          return request;
        },
        responseInterceptor: (response) => {
          if (/openapi\.json$/.test(response.url || "") && !response.ok) bar.say(refusal(response.status), true);
          const type = (response.headers && response.headers["content-type"]) || "";
          if (type.startsWith("audio/") && response.data instanceof Blob) keepAudio(response.url, response.data);
          return response;
        },
        onComplete: () => {
          if (ui && storedKey()) ui.preauthorizeApiKey("bearer", storedKey());
        },
      }));
      return ui;
    };
    Object.assign(wrapped, original); // presets, plugins: what the bootstrap script reads off it
    window.SwaggerUIBundle = wrapped;
  }

  // Swagger UI plays an audio answer with <audio><source src="the request's URL">, which would
  // GET the POST endpoint again (405); the player gets the audio the answer brought instead.
  const audioAnswers = new Map(); // request URL -> object URL of the last audio answered there
  function keepAudio(url, blob) {
    const key = new URL(url, location.href).href;
    if (audioAnswers.has(key)) URL.revokeObjectURL(audioAnswers.get(key));
    audioAnswers.set(key, URL.createObjectURL(blob));
  }
  new MutationObserver(() => {
    for (const source of document.querySelectorAll(".live-responses-table audio source")) {
      const answer = audioAnswers.get(source.src);
      if (answer) {
        source.src = answer;
        source.parentElement.load();
      }
    }
  }).observe(document.body, { childList: true, subtree: true });

  // ReDoc would fetch the document itself, without the key; fetch it here and hand it over.
  function startRedoc(bar, element) {
    const headers = storedKey() ? { Authorization: "Bearer " + storedKey() } : {};
    fetch(element.dataset.openapiUrl, { headers })
      .then(async (response) => {
        if (!response.ok) {
          bar.say(refusal(response.status), true);
          return;
        }
        window.Redoc.init(await response.json(), { hideDownloadButton: false }, element);
      })
      .catch((error) => bar.say("The API document could not be loaded: " + error, true));
  }

  const bar = keyBar();
  const redoc = document.getElementById("redoc");
  if (window.SwaggerUIBundle) wrapSwaggerUI(bar);
  if (window.Redoc && redoc) startRedoc(bar, redoc);
})();
