// Reads a JSON array of ServiceMonitor objects on stdin and prints, as JSON, one list of
// validation errors per object (empty when it is valid): required fields, types, enums and
// patterns of the prometheus-operator API.
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((doc) => {
  try {
    new ServiceMonitor(doc).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    return e.errors.map((err) => `${err.instancePath || "/"} ${err.message}`);
  }
});
console.log(JSON.stringify(results));
