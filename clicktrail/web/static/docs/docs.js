// The API page: Swagger UI (vendor/, swagger-ui-dist) on this API's own OpenAPI document. Nothing
// is fetched from elsewhere: the page's policy allows only this origin, and nothing here asks.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout", // not the standalone top bar, which loads any URL typed into it
  deepLinking: true, // #/Tracking/batch links to an operation
  validatorUrl: null, // never send the document to the online validator
  queryConfigEnabled: false, // ?url= and ?configUrl= cannot load another document
  persistAuthorization: false, // a token typed into Authorize stays in this tab's memory only
});
