// Starts the vendored Swagger UI on /docs. Kept out of index.html so that a strict
// Content-Security-Policy (script-src 'self', no inline script) applies to the page.
// Everything is fetched from this origin: the OpenAPI description at /openapi.json; the online
// validator is disabled (validatorUrl: null) and no default (petstore) URL is ever loaded.
"use strict";

window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    tryItOutEnabled: false,
    validatorUrl: null,
  });
});
