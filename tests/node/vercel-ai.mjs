// The Vercel AI SDK's default OpenAI provider against flux-worker, one scenario per run:
//   FLUX_BASE_URL=http://127.0.0.1:8000/v1 FLUX_API_KEY=... node vercel-ai.mjs <scenario>
// createOpenAI(...)(modelId) is the Responses API model (POST /responses);
// openai.image(...) is the Images API. Prints one JSON line (tests/test_node_sdks.py checks it).
import { createOpenAI } from "@ai-sdk/openai";
import { generateImage, generateText, streamText } from "ai";

import { imageSummary, main } from "./common.mjs";

const provider = ({ baseURL, apiKey }) => createOpenAI({ baseURL, apiKey });

// The parts of a generateText/streamText result that say what the SDK made of the reply.
function contentSummary(content) {
  return content.map((part) => {
    switch (part.type) {
      case "text":
        return { type: part.type, text: part.text };
      case "tool-call":
        return { type: part.type, toolName: part.toolName, toolCallId: part.toolCallId,
                 providerExecuted: part.providerExecuted ?? null };
      case "tool-result":
        return { type: part.type, toolName: part.toolName, toolCallId: part.toolCallId,
                 providerExecuted: part.providerExecuted ?? null,
                 result: imageSummary(part.output?.result) };
      case "file":
        return { type: part.type, mediaType: part.file.mediaType, image: imageSummary(part.file.base64) };
      default:
        return { type: part.type };
    }
  });
}

// streamText reports errors through onError (the stream just ends): make them fail the scenario.
function failOnError() {
  const errors = [];
  return {
    onError: ({ error }) => { errors.push(error); },
    check() {
      if (errors.length) throw errors[0];
    },
  };
}

const scenarios = {
  async "generate-text"(cfg) {
    const result = await generateText({
      model: provider(cfg)("gpt-4o"), prompt: "A cute cat 16:9", maxRetries: 0,
    });
    return {
      text: result.text,
      finishReason: result.finishReason,
      rawFinishReason: result.rawFinishReason ?? null,
      usage: result.usage,
      responseId: result.response.id,
      modelId: result.response.modelId,
      content: contentSummary(result.content),
      warnings: result.warnings ?? [],
    };
  },

  async "stream-text"(cfg) {
    const errors = failOnError();
    const result = streamText({
      model: provider(cfg)("gpt-4o"), prompt: "A cute cat 16:9", maxRetries: 0,
      onError: errors.onError,
    });
    const chunks = [];
    for await (const delta of result.textStream) chunks.push(delta);
    errors.check();
    return {
      text: chunks.join(""),
      chunks: chunks.length,
      finishReason: await result.finishReason,
      rawFinishReason: (await result.rawFinishReason) ?? null,
      usage: await result.usage,
      responseId: (await result.response).id,
    };
  },

  // The provider-executed image tool: an image_generation_call output item
  // becomes a tool-call and a tool-result whose `result` is the base64 image.
  async "image-tool"(cfg) {
    const openai = provider(cfg);
    const result = await generateText({
      model: openai("gpt-4o"), prompt: "A cute cat", maxRetries: 0,
      tools: { image_generation: openai.tools.imageGeneration({ outputFormat: "png" }) },
    });
    return {
      text: result.text,
      finishReason: result.finishReason,
      usage: result.usage,
      content: contentSummary(result.content),
      toolResults: contentSummary(result.toolResults),
      files: result.files.map((file) => ({ mediaType: file.mediaType, image: imageSummary(file.base64) })),
    };
  },

  // The same tool through streamText: the stream's part types, in order.
  async "image-tool-stream"(cfg) {
    const openai = provider(cfg);
    const errors = failOnError();
    const result = streamText({
      model: openai("gpt-4o"), prompt: "A cute cat", maxRetries: 0, onError: errors.onError,
      tools: { image_generation: openai.tools.imageGeneration({ outputFormat: "png" }) },
    });
    const parts = [];
    const text = [];
    const toolResults = [];
    for await (const part of result.fullStream) {
      parts.push(part.type);
      if (part.type === "text-delta") text.push(part.text);
      if (part.type === "tool-result") {
        toolResults.push({ toolName: part.toolName, preliminary: part.preliminary ?? false,
                           result: imageSummary(part.output?.result) });
      }
      if (part.type === "error") throw part.error;
    }
    errors.check();
    return {
      parts,
      text: text.join(""),
      toolResults,
      finishReason: await result.finishReason,
      usage: await result.usage,
    };
  },

  // A prompt Workers AI refuses, streamed: the service's response.failed should
  // reach the app as an error part carrying its message, and finishReason "error".
  async "stream-text-refused"(cfg) {
    const errors = [];
    const result = streamText({
      model: provider(cfg)("gpt-4o"), prompt: "nsfw-trigger cat", maxRetries: 0,
      onError: ({ error }) => { errors.push(error); },
    });
    const parts = [];
    for await (const part of result.fullStream) parts.push(part.type);
    return {
      parts,
      finishReason: await result.finishReason,
      errors: errors.map((error) => ({ name: error.name, message: error.message })),
    };
  },

  // A second turn whose history holds the first reply: the SDK sends it as an
  // item_reference (store defaults to true) and the service must accept that.
  async "multi-turn"(cfg) {
    const sent = [];  // the request bodies, to show what the SDK put in `input`
    const recording = async (url, init) => {
      sent.push(JSON.parse(init.body));
      return fetch(url, init);
    };
    const model = createOpenAI({ ...cfg, fetch: recording })("gpt-4o");
    const messages = [{ role: "user", content: "A cute cat" }];
    const first = await generateText({ model, messages, maxRetries: 0 });
    messages.push(...first.response.messages, { role: "user", content: "A red fox" });
    const second = await generateText({ model, messages, maxRetries: 0 });
    return {
      first: { text: first.text, finishReason: first.finishReason },
      second: { text: second.text, finishReason: second.finishReason },
      second_input: sent[1].input,
    };
  },

  // The Images API through the image model.
  async "generate-image"(cfg) {
    const result = await generateImage({
      model: provider(cfg).image("gpt-image-1"), prompt: "A castle", size: "1024x1024",
      maxRetries: 0,
    });
    return {
      count: result.images.length,
      images: result.images.map((file) => ({ mediaType: file.mediaType, image: imageSummary(file.base64) })),
      warnings: result.warnings,
      usage: result.usage ?? null,
    };
  },
};

await main(scenarios);
