"""OHIF's `app-config.js` for Pergamon: our name (in the header too), no tour, no demo server, our own DICOMweb.

The data source is `window.location.origin + <http.base_path>`: the viewer and the DICOMweb
service share one origin, so no CORS and no proxy are needed, and the address the browser used
(host name, port) is the one OHIF calls back. Keys follow the configuration tested in
`ohif-feasibility.md` (OHIF 3.13.2).
"""

from __future__ import annotations

import json

MOUNT = "/viewer"
"""Where Pergamon serves the viewer; the deploy step patches the build's public path to it."""


def app_config_js(base_path: str = "/dicom-web", *, name: str = "Pergamon") -> str:
    """The text of `app-config.js` pointing OHIF at the DICOMweb service under `base_path`."""
    root = f"window.location.origin + {json.dumps(base_path.rstrip('/'))}"
    return f"""/* Written by Pergamon (pergamon.viewer.appconfig); served fresh from the settings. */
window.config = {{
  name: {json.dumps(name)},
  routerBasename: {json.dumps(MOUNT)},
  whiteLabeling: {{
    createLogoComponentFn: function (React) {{
      const props = {{ id: 'pergamon-logo', className: 'text-primary-light text-lg' }};
      return React.createElement('span', props, {json.dumps(name)});
    }},
  }},
  showStudyList: true,
  extensions: [],
  modes: [],
  customizationService: {{ 'ohif.tours': {{ $set: [] }} }},
  investigationalUseDialog: {{ option: 'never' }},
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  defaultDataSourceName: 'pergamon',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'pergamon',
      configuration: {{
        friendlyName: {json.dumps(name)},
        name: 'pergamon',
        wadoUriRoot: {root},
        qidoRoot: {root},
        wadoRoot: {root},
        qidoSupportsIncludeField: false,
        supportsReject: false,
        dicomUploadEnabled: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: {{ enabled: true }},
      }},
    }},
  ],
}};
"""
