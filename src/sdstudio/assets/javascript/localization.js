// Applies an A1111 localization to the page: every text node, placeholder and title whose
// trimmed text is a key of the mapping shows its translation, now and as Gradio renders more
// of the page. The page calls sdstudioLocalize(mapping) once it has loaded, with the mapping
// of the `localization` setting then in force ({} for English); it is kept as
// window.localization, where A1111 keeps it.
(() => {
    // Names of models and styles, prompts and infotexts are the user's data, not the page's words.
    const DATA = [
        "code",
        "#setting_sd_model_checkpoint [role=option]",
        "#txt2img_styles [role=option]",
        "#txt2img_styles .token",
        "#img2img_styles [role=option]",
        "#img2img_styles .token",
        "#txt2img_infotext",
        "#img2img_infotext",
        "#pnginfo_html",
    ].join(", ");
    const TEXT_OF = "script, style, textarea"; // not text the page shows as words
    const NUMBER = /^[\d.]+$/;
    const ATTRIBUTES = ["placeholder", "title"];
    const shown = new Set(); // translations already on the page: never translated again

    const translationOf = (text) => {
        if (!text || NUMBER.test(text) || shown.has(text)) return undefined;
        const translation = window.localization[text];
        return typeof translation === "string" && translation !== text ? translation : undefined;
    };

    const translateText = (node) => {
        const parent = node.parentElement;
        if (!parent || parent.closest(TEXT_OF) || parent.closest(DATA)) return;
        const text = node.nodeValue.trim();
        const translation = translationOf(text);
        if (translation === undefined) return;
        shown.add(translation);
        node.nodeValue = node.nodeValue.replace(text, translation);
    };

    const translateAttributes = (element) => {
        if (element.closest(DATA)) return;
        for (const name of ATTRIBUTES) {
            const translation = translationOf((element.getAttribute(name) || "").trim());
            if (translation === undefined) continue;
            shown.add(translation);
            element.setAttribute(name, translation);
        }
    };

    const translateTree = (root) => {
        if (root.nodeType === Node.TEXT_NODE) {
            translateText(root);
            return;
        }
        if (root.nodeType !== Node.ELEMENT_NODE) return;
        translateAttributes(root);
        for (const element of root.querySelectorAll("[placeholder], [title]")) translateAttributes(element);
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) translateText(node);
    };

    let observer = null;

    window.sdstudioLocalize = (mapping) => {
        window.localization = mapping && typeof mapping === "object" ? mapping : {};
        if (Object.keys(window.localization).length === 0 || observer) return;
        const root = document.body;
        if (window.localization.rtl) root.setAttribute("dir", "rtl");
        translateTree(root);
        observer = new MutationObserver((records) => {
            for (const record of records) {
                if (record.type === "childList") record.addedNodes.forEach(translateTree);
                else if (record.type === "characterData") translateText(record.target);
                else translateAttributes(record.target);
            }
        });
        observer.observe(root, {
            childList: true,
            subtree: true,
            characterData: true,
            attributes: true,
            attributeFilter: ATTRIBUTES,
        });
    };
})();
