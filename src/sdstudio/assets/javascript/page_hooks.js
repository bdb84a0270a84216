// sdstudio's page helpers under the names A1111's script.js gives them, so that extensions'
// javascript/*.js find them: gradioApp() is the page's root; onUiLoaded(fn) runs fn once, when
// the generation tabs are there; onUiUpdate(fn) runs fn(mutationRecords) as the page changes;
// onAfterUiUpdate(fn) runs fn once the page has stopped changing for a moment.
(() => {
    if (window.gradioApp) return;

    const loadedCallbacks = [];
    const updateCallbacks = [];
    const afterUpdateCallbacks = [];
    let uiLoaded = false;
    let afterUpdateTimer = null;

    window.gradioApp = () => {
        const app = document.querySelector("gradio-app");
        if (!app) return document;
        if (!app.getElementById) app.getElementById = (id) => document.getElementById(id);
        return app.shadowRoot || app;
    };

    const runAll = (callbacks, ...args) => {
        for (const callback of callbacks) {
            try {
                callback(...args);
            } catch (error) {
                console.error("sdstudio: a page callback failed", error);
            }
        }
    };

    window.onUiLoaded = (callback) => {
        if (uiLoaded) runAll([callback]);
        else loadedCallbacks.push(callback);
    };
    window.onUiUpdate = (callback) => updateCallbacks.push(callback);
    window.onAfterUiUpdate = (callback) => afterUpdateCallbacks.push(callback);

    new MutationObserver((records) => {
        if (!uiLoaded && document.getElementById("txt2img_prompt")) {
            uiLoaded = true;
            runAll(loadedCallbacks);
        }
        runAll(updateCallbacks, records);
        clearTimeout(afterUpdateTimer);
        afterUpdateTimer = setTimeout(() => runAll(afterUpdateCallbacks), 200);
    }).observe(document.body || document.documentElement, { childList: true, subtree: true });
})();
