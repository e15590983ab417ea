// Swagger UI on /api/docs/, from files served by this site (drf-spectacular-sidecar).
// validatorUrl: null keeps Swagger UI from calling its online validator: the page
// makes no request outside this site.
(function () {
  "use strict";
  var node = document.getElementById("swagger-ui");
  if (!node || typeof SwaggerUIBundle === "undefined") return;
  window.ui = SwaggerUIBundle({
    url: node.dataset.schemaUrl,
    domNode: node,
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
